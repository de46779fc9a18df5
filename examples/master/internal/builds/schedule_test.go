package builds

import (
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// A periodic schedule forces through Periodic when set, and only while
// Active says so: in a cluster, on the leader alone.
func TestPeriodicThroughForceWhileActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewSchedulers(NewRunner(Config{History: NewHistory(0, 0)}), slog.New(slog.NewTextHandler(io.Discard, nil)))
		var mu sync.Mutex
		var forced []string
		s.Periodic = func(builder, reason string) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			forced = append(forced, builder+": "+reason)
			return "id", nil
		}
		var active atomic.Bool
		s.Active = active.Load
		s.Start([]Schedule{{Builder: "b", Every: time.Minute}})
		defer s.Stop()

		time.Sleep(3*time.Minute + time.Second) // three ticks, inactive
		synctest.Wait()
		if len(forced) != 0 {
			t.Fatalf("forced %v while not active", forced)
		}
		active.Store(true)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(forced) != 2 || forced[0] != "b: periodic scheduler, every 1m0s" {
			t.Fatalf("forced %q in two active minutes, want two periodic builds of b", forced)
		}
	})
}
