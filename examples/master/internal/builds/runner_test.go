package builds

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// offlineRunner is a Runner of builder "b" on the static slave "s1", which
// never attaches: its builds wait for a slot.
func offlineRunner(t *testing.T, cfg Config) (*Runner, *slave.Manager) {
	t.Helper()
	s1, err := slave.New("s1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	m, err := slave.NewManager(slave.Config{Logger: slog.New(slog.DiscardHandler)}, s1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	cfg.Manager, cfg.Logger = m, slog.New(slog.DiscardHandler)
	if cfg.History == nil {
		cfg.History = NewHistory(0, 0)
	}
	r := NewRunner(cfg)
	r.SetBuilders([]Builder{{Name: "b", Slaves: []string{"s1"}, Steps: []Step{{Name: "s", Shell: "true"}}}})
	return r, m
}

// TestShutdownCancelsQueuedBuilds: a build still waiting for a slot when
// the master shuts down is cancelled at once instead of holding the drain
// until its deadline.
func TestShutdownCancelsQueuedBuilds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := offlineRunner(t, Config{})
		h, err := r.Force("b", "test")
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		start := time.Now()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Shutdown took %v with only a queued build", d)
		}
		<-h.Done()
		if h.State() != Exception {
			t.Errorf("the queued build is %s", h.State())
		}
	})
}

// TestForceLimits: a reason over MaxReasonLength is refused, and so is a
// build of a builder that has MaxQueuedBuilds waiting already, until one
// of them starts.
func TestForceLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, m := offlineRunner(t, Config{Limits: Limits{MaxQueuedBuilds: 2, MaxReasonLength: 10}})
		if _, err := r.Force("b", strings.Repeat("x", 11)); !errors.Is(err, ErrReasonTooLong) {
			t.Errorf("Force with an 11-byte reason = %v", err)
		}
		var hs []*Handle
		for range 2 {
			h, err := r.Force("b", "0123456789")
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		if _, err := r.Force("b", "third"); !errors.Is(err, ErrQueueFull) {
			t.Errorf("a third queued build = %v", err)
		}
		slavetest.Attach(t, m, "s1", "pw", slave.Info{}) // the queued builds start
		for _, h := range hs {
			<-h.Done()
		}
		if _, err := r.Force("b", "again"); err != nil {
			t.Errorf("Force once the queue has drained = %v", err)
		}
		r.Shutdown(t.Context())
	})
}
