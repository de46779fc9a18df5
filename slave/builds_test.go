package slave_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

func TestMaxBuildsIsEnforced(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "bot-linux", "linuxpassword", slave.MaxBuilds(2)))
	slavetest.Attach(t, f.m, "bot-linux", "linuxpassword", slave.Info{})
	b1, err1 := f.m.TryAcquire("bot-linux")
	b2, err2 := f.m.TryAcquire("bot-linux")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := f.m.TryAcquire("bot-linux"); !errors.Is(err, slave.ErrNoSlot) {
		t.Fatalf("third build on max_builds=2: %v, want ErrNoSlot", err)
	}
	if st := state(t, f.m, "bot-linux"); st.Running != 2 || st.MaxBuilds != 2 {
		t.Errorf("state = %+v", st)
	}
	b1.Release()
	b1.Release() // idempotent: must not free a second slot
	b3, err := f.m.TryAcquire("bot-linux")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := f.m.TryAcquire("bot-linux"); !errors.Is(err, slave.ErrNoSlot) {
		t.Fatalf("double release freed two slots: %v", err)
	}
	b2.Release()
	b3.Release()
	if st := state(t, f.m, "bot-linux"); st.Running != 0 {
		t.Errorf("running = %d after all releases", st.Running)
	}
}

func TestNoLimitWhenMaxBuildsIsZero(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
	slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
	for i := range 50 {
		if _, err := f.m.TryAcquire("bot"); err != nil {
			t.Fatalf("build %d: %v", i, err)
		}
	}
}

func TestAcquireErrors(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
	if _, err := f.m.TryAcquire("nope"); !errors.Is(err, slave.ErrUnknownSlave) {
		t.Errorf("unknown: %v", err)
	}
	if _, err := f.m.TryAcquire("bot"); !errors.Is(err, slave.ErrNoSlot) {
		t.Errorf("detached slave: %v, want ErrNoSlot", err)
	}
	if _, err := f.m.TryAcquire(); err == nil {
		t.Error("no names accepted")
	}
}

func TestAcquirePrefersAnIdleAttachedSlave(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"), mustNew(t, "b", "pw"), mustNew(t, "c", "pw"))
	slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
	slavetest.Attach(t, f.m, "b", "pw", slave.Info{})
	busy, _ := f.m.TryAcquire("a")
	defer busy.Release()
	b, err := f.m.TryAcquire("c", "a", "b") // c is detached, a is busy
	if err != nil {
		t.Fatal(err)
	}
	if b.Slave() != "b" {
		t.Errorf("got %s, want the idle b", b.Slave())
	}
	if b.Properties()["slavename"] != "b" {
		t.Errorf("properties = %v", b.Properties())
	}
}

func TestAcquireWaitsForAFreeSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw", slave.MaxBuilds(1)))
		slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		first, _ := f.m.TryAcquire("bot")
		got := make(chan *slave.Build)
		go func() {
			b, err := f.m.Acquire(context.Background(), "bot")
			if err != nil {
				t.Error(err)
			}
			got <- b
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("Acquire returned while the only slot was taken")
		default:
		}
		first.Release()
		if b := <-got; b.Slave() != "bot" {
			t.Errorf("got %s", b.Slave())
		}
	})
}

func TestAcquireWaitsForAnAttach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		got := make(chan *slave.Build)
		go func() {
			b, _ := f.m.Acquire(context.Background(), "bot")
			got <- b
		}()
		synctest.Wait()
		slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		if b := <-got; b == nil {
			t.Fatal("no build after attach")
		}
	})
}

func TestAcquireGivesUpWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		if _, err := f.m.Acquire(ctx, "bot"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire = %v", err)
		}
		if time.Since(start) != time.Minute {
			t.Errorf("gave up after %v", time.Since(start))
		}
		// The abandoned wait must not take the slot of a later attach.
		slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		if _, err := f.m.TryAcquire("bot"); err != nil {
			t.Fatalf("slot taken by an abandoned Acquire: %v", err)
		}
	})
}

func TestLostConnectionCancelsItsBuildsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw", slave.MaxBuilds(2)))
		c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		b1, _ := f.m.TryAcquire("bot")
		b2, _ := f.m.TryAcquire("bot")
		network := errors.New("connection reset by peer")
		c.Drop(network)
		synctest.Wait()
		for _, b := range []*slave.Build{b1, b2} {
			cause := context.Cause(b.Context())
			if !errors.Is(cause, slave.ErrSlaveLost) || !errors.Is(cause, network) {
				t.Errorf("build cause = %v, want ErrSlaveLost and the network error", cause)
			}
		}
		st := state(t, f.m, "bot")
		if st.Attached || st.Running != 0 {
			t.Errorf("state after loss = %+v", st)
		}
		b1.Release() // after the loss: a no-op
		c2 := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		for range 2 {
			if _, err := f.m.TryAcquire("bot"); err != nil {
				t.Fatalf("slots not freed by the loss: %v", err)
			}
		}
		_ = c2
	})
}

func TestPauseKeepsTheConnectionButTakesNoBuilds(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
	c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
	if err := f.m.Pause("bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.TryAcquire("bot"); !errors.Is(err, slave.ErrNoSlot) {
		t.Fatalf("paused slave gave a slot: %v", err)
	}
	if st := state(t, f.m, "bot"); !st.Paused || !st.Attached || c.Closed() {
		t.Errorf("state = %+v", st)
	}
	if err := f.m.Unpause("bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.TryAcquire("bot"); err != nil {
		t.Fatalf("unpaused slave: %v", err)
	}
	if err := f.m.Pause("ghost"); !errors.Is(err, slave.ErrUnknownSlave) {
		t.Errorf("Pause(ghost) = %v", err)
	}
}

func TestGracefulShutdownWaitsForRunningBuilds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		b, _ := f.m.TryAcquire("bot")
		if err := f.m.GracefulShutdown("bot"); err != nil {
			t.Fatal(err)
		}
		if st := state(t, f.m, "bot"); !st.ShuttingDown {
			t.Error("state does not show the shutdown")
		}
		if _, err := f.m.TryAcquire("bot"); !errors.Is(err, slave.ErrNoSlot) {
			t.Fatalf("slave shutting down gave a slot: %v", err)
		}
		synctest.Wait()
		if c.ShutdownRequested() {
			t.Fatal("slave asked to shut down during a build")
		}
		b.Release()
		synctest.Wait()
		if !c.ShutdownRequested() {
			t.Fatal("slave not asked to shut down after its last build")
		}
		if st := state(t, f.m, "bot"); st.Attached || st.ShuttingDown {
			t.Errorf("state after the slave left = %+v", st)
		}
		if err := f.m.GracefulShutdown("bot"); !errors.Is(err, slave.ErrNotAttached) {
			t.Errorf("GracefulShutdown of a detached slave = %v", err)
		}
	})
}
