// Package leakcheck fails a test whose code leaves goroutines behind, as
// go.uber.org/goleak's VerifyNone with IgnoreCurrent does, in a few lines
// over runtime.Stack.
package leakcheck

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/stacks"
)

// Snapshot is the set of goroutines running at one moment, by id.
type Snapshot map[uint64]bool

// Take records the goroutines running now.
func Take() Snapshot {
	s := Snapshot{}
	for _, g := range goroutines() {
		s[g.id] = true
	}
	return s
}

type goroutine struct {
	id    uint64
	stack string
}

// goroutines lists every goroutine but the caller's.
func goroutines() []goroutine {
	var out []goroutine
	for i, block := range stacks.All() {
		if i == 0 {
			continue // the caller's: runtime.Stack puts it first
		}
		head, _, _ := strings.Cut(block, " [")
		id, err := strconv.ParseUint(strings.TrimPrefix(head, "goroutine "), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, goroutine{id, block})
	}
	return out
}

// Option narrows or relaxes Verify.
type Option func(*options)

type options struct {
	match []string
	grace time.Duration
}

// Matching counts only the goroutines whose stack contains one of the
// substrings, such as "buildslave/latent." for the frames of package
// latent: goroutines of test doubles and of the test itself are left
// alone.
func Matching(substrings ...string) Option {
	return func(o *options) { o.match = append(o.match, substrings...) }
}

// Within gives goroutines that are on their way out (an HTTP connection
// closed by the peer) up to d to end. Outside testing/synctest only: in a
// bubble, call synctest.Wait before Verify instead.
func Within(d time.Duration) Option { return func(o *options) { o.grace = d } }

// Verify fails t, with their stacks, if goroutines not in s are running.
func (s Snapshot) Verify(t testing.TB, opts ...Option) {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	deadline := time.Now().Add(o.grace)
	for {
		leaked := s.since(o.match)
		if len(leaked) == 0 {
			return
		}
		if !time.Now().Before(deadline) {
			t.Errorf("%d goroutine(s) left behind:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// since returns the stacks of the goroutines not in s that match.
func (s Snapshot) since(match []string) []string {
	var out []string
	for _, g := range goroutines() {
		if s[g.id] {
			continue
		}
		if len(match) > 0 && !containsAny(g.stack, match) {
			continue
		}
		out = append(out, g.stack)
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
