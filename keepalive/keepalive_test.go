package keepalive_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/keepalive"
)

// peer answers keepalives after delay; a negative delay never answers.
type peer struct {
	delay time.Duration
	sent  atomic.Int32
}

func (p *peer) Keepalive(ctx context.Context) error {
	p.sent.Add(1)
	if p.delay < 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	select {
	case <-time.After(p.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestSendsEveryIntervalAfterTheReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &peer{delay: time.Second}
		var alive []time.Duration
		start := time.Now()
		l := keepalive.Start(p, time.Hour, 0, func() { alive = append(alive, time.Since(start)) }, func(err error) { t.Errorf("lost: %v", err) })
		defer l.Stop()
		time.Sleep(3*time.Hour + 3*time.Second)
		synctest.Wait()
		want := []time.Duration{time.Hour + time.Second, 2*time.Hour + 2*time.Second, 3*time.Hour + 3*time.Second}
		if len(alive) != len(want) {
			t.Fatalf("replies at %v, want %v", alive, want)
		}
		for i := range want {
			if alive[i] != want[i] {
				t.Errorf("reply %d at %v, want %v", i, alive[i], want[i])
			}
		}
	})
}

func TestMissingReplyIsLostAtTheBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &peer{delay: -1}
		start := time.Now()
		lost := make(chan time.Duration, 1)
		var why error
		l := keepalive.Start(p, 10*time.Minute, 30*time.Second, func() {}, func(err error) { why = err; lost <- time.Since(start) })
		defer l.Stop()
		if at := <-lost; at != 10*time.Minute+30*time.Second {
			t.Errorf("lost at %v, want 10m30s", at)
		}
		if !errors.Is(why, keepalive.ErrNoReply) {
			t.Errorf("reason %v, want ErrNoReply", why)
		}
		time.Sleep(time.Hour)
		if n := p.sent.Load(); n != 1 {
			t.Errorf("%d keepalives sent after the loss, want 1", n)
		}
	})
}

func TestDefaultBoundIsWellBelowTheInterval(t *testing.T) {
	for _, tc := range []struct{ interval, want time.Duration }{
		{time.Hour, time.Minute},
		{time.Minute, 30 * time.Second},
		{10 * time.Second, 5 * time.Second},
	} {
		if got := keepalive.DefaultTimeout(tc.interval); got != tc.want {
			t.Errorf("DefaultTimeout(%v) = %v, want %v", tc.interval, got, tc.want)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		lost := make(chan time.Duration, 1)
		l := keepalive.Start(&peer{delay: -1}, time.Hour, 0, func() {}, func(error) { lost <- time.Since(start) })
		defer l.Stop()
		if at := <-lost; at != time.Hour+time.Minute {
			t.Errorf("lost at %v, want 1h1m", at)
		}
	})
}

func TestDisabledSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &peer{}
		l := keepalive.Start(p, -1, 0, func() {}, func(error) {})
		time.Sleep(100 * time.Hour)
		l.Stop()
		if n := p.sent.Load(); n != 0 {
			t.Errorf("%d keepalives sent while disabled", n)
		}
	})
}

func TestStopCancelsTheKeepaliveInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &peer{delay: -1}
		l := keepalive.Start(p, time.Minute, time.Hour, func() { t.Error("alive") }, func(error) { t.Error("lost after Stop") })
		time.Sleep(time.Minute + time.Second)
		synctest.Wait() // the keepalive is in flight, waiting for a reply
		l.Stop()        // returns only once it is cancelled and done
		l.Stop()        // idempotent
		time.Sleep(2 * time.Hour)
		if n := p.sent.Load(); n != 1 {
			t.Errorf("%d keepalives, want 1", n)
		}
	})
}

func TestSlowReplyDoesNotDelayOtherLoops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow, fast := &peer{delay: 50 * time.Second}, &peer{}
		var fastAt []time.Duration
		start := time.Now()
		l1 := keepalive.Start(slow, time.Minute, 55*time.Second, func() {}, func(err error) { t.Error(err) })
		l2 := keepalive.Start(fast, time.Minute, 0, func() { fastAt = append(fastAt, time.Since(start)) }, func(err error) { t.Error(err) })
		time.Sleep(2*time.Minute + time.Second)
		l1.Stop()
		l2.Stop()
		if len(fastAt) != 2 || fastAt[0] != time.Minute || fastAt[1] != 2*time.Minute {
			t.Errorf("fast peer answered at %v, want [1m 2m]", fastAt)
		}
	})
}

// clockPeer answers at once and records when each keepalive came.
type clockPeer struct {
	start time.Time
	at    []time.Duration
}

func (p *clockPeer) Keepalive(context.Context) error {
	p.at = append(p.at, time.Since(p.start))
	return nil
}

// TestKeepalivesOfManySlavesFireTogether: loops started within half a
// second of each other send their keepalives at the same instants (so a
// master of many slaves wakes once for all of them), and an interval
// stays the interval: no loop drifts.
func TestKeepalivesOfManySlavesFireTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		peers := make([]*clockPeer, 3)
		for i, after := range []time.Duration{0, 137 * time.Millisecond, 420 * time.Millisecond} {
			time.Sleep(after - time.Since(start))
			peers[i] = &clockPeer{start: start}
			l := keepalive.Start(peers[i], time.Minute, 0, func() {}, func(err error) { t.Errorf("lost: %v", err) })
			defer l.Stop()
		}
		time.Sleep(10*time.Minute + time.Second)
		synctest.Wait()
		for i, p := range peers {
			if len(p.at) != 10 {
				t.Fatalf("loop %d sent at %v, want 10 keepalives", i, p.at)
			}
			for k, at := range p.at {
				if want := time.Duration(k+1) * time.Minute; at != want {
					t.Errorf("loop %d: keepalive %d at %v, want %v", i, k, at, want)
				}
			}
		}
	})
}
