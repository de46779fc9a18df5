package leakcheck

import (
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/stacks"
)

// recorder is a testing.TB that keeps its errors.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, format)
	r.TB.Logf(format, args...)
}

func parked(stop chan struct{}) { <-stop }

func TestVerifyFindsTheGoroutineLeftBehind(t *testing.T) {
	s := Take()
	stop := make(chan struct{})
	go parked(stop)
	// Until it runs, the new goroutine's stack shows only its wrapper.
	stacks.Await("leakcheck.parked", "chan receive")

	r := &recorder{TB: t}
	s.Verify(r)
	if len(r.errs) != 1 {
		t.Errorf("Verify reported %d errors, want 1", len(r.errs))
	}
	r.errs = nil
	s.Verify(r, Matching("nothing.like.this"))
	if len(r.errs) != 0 {
		t.Errorf("Matching did not narrow: %v", r.errs)
	}
	r.errs = nil
	s.Verify(r, Matching("leakcheck.parked"))
	if len(r.errs) != 1 {
		t.Errorf("Matching the leak's frame: %d errors, want 1", len(r.errs))
	}

	close(stop)
	r.errs = nil
	s.Verify(r, Within(5*time.Second))
	if len(r.errs) != 0 {
		t.Errorf("after the goroutine ended: %v", r.errs)
	}
}

func TestTakeSeesOthersNotTheCaller(t *testing.T) {
	for _, g := range goroutines() {
		if strings.Contains(g.stack, "leakcheck.goroutines(") {
			t.Errorf("the caller is listed:\n%s", g.stack)
		}
	}
	if len(Take()) == 0 {
		t.Error("no goroutine seen: the test runner's main goroutine at least runs")
	}
}
