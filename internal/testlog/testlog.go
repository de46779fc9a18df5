// Package testlog collects log output in tests, safely for concurrent use.
package testlog

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is an io.Writer for a test's loggers that can be read while they
// write.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the lines written so far, without their newlines.
func (b *Buffer) Lines() []string {
	s := strings.TrimSuffix(b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Matching returns the lines that contain every one of subs.
func (b *Buffer) Matching(subs ...string) []string {
	var out []string
	for _, line := range b.Lines() {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}
