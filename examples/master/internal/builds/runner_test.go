package builds

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/slave"
)

// offlineRunner is a Runner of builder "b" on the static slave "s1", which
// never attaches: its builds wait for a slot.
func offlineRunner(t *testing.T, cfg Config) *Runner {
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
	return r
}

// TestShutdownCancelsQueuedBuilds: a build still waiting for a slot when
// the master shuts down is cancelled at once instead of holding the drain
// until its deadline.
func TestShutdownCancelsQueuedBuilds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := offlineRunner(t, Config{})
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
