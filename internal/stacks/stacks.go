// Package stacks finds goroutines by what their stacks hold, for tests
// that check where a connection's goroutine waits.
package stacks

import (
	"runtime"
	"strings"
	"time"
)

// Containing returns the stack of every goroutine whose stack holds s.
func Containing(s string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, s) {
			found = append(found, g)
		}
	}
	return found
}

// Await returns the stacks holding s once exactly one does and it holds
// at too, or what it found last after 5 s.
func Await(s, at string) []string {
	for deadline := time.Now().Add(5 * time.Second); ; runtime.Gosched() {
		found := Containing(s)
		if len(found) == 1 && strings.Contains(found[0], at) || time.Now().After(deadline) {
			return found
		}
	}
}
