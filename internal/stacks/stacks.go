// Package stacks lists goroutines' stacks and finds goroutines by what
// their stacks hold, for tests that check where a goroutine waits or
// which ones were left behind (package leakcheck).
package stacks

import (
	"runtime"
	"strings"
	"time"
)

// All returns every goroutine's stack, the caller's first (as
// runtime.Stack lists them).
func All() []string {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Containing returns the stack of every goroutine whose stack holds s.
func Containing(s string) []string {
	var found []string
	for _, g := range All() {
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

// AwaitNone returns nil once no stack holds s, or the stacks holding s
// after 5 s.
func AwaitNone(s string) []string {
	for deadline := time.Now().Add(5 * time.Second); ; runtime.Gosched() {
		found := Containing(s)
		if len(found) == 0 || time.Now().After(deadline) {
			return found
		}
	}
}
