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

func TestDuplicateWithLiveOldConnectionIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		old := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		nc := slavetest.NewConn(slave.Info{})
		err := f.m.Attach(context.Background(), "bot", nc)
		if !errors.Is(err, slave.ErrDuplicate) {
			t.Fatalf("second attach = %v, want ErrDuplicate", err)
		}
		if len(old.Prints()) != 1 {
			t.Errorf("old connection got %d pings, want 1", len(old.Prints()))
		}
		if st := state(t, f.m, "bot"); st.RemoteAddr != old.RemoteAddr() || old.Closed() {
			t.Errorf("old connection disturbed: %+v", st)
		}
		if n := len(f.log.Matching("refused", "slave=bot", "already attached")); n != 1 {
			t.Errorf("%d refusal lines, want 1:\n%s", n, f.log.Lines())
		}
	})
}

func TestDuplicateWithDeadOldConnectionReplacesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		old := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		b, err := f.m.TryAcquire("bot")
		if err != nil {
			t.Fatal(err)
		}
		old.Silent(true)
		start := time.Now()
		nc := slavetest.NewConn(slave.Info{})
		if err := f.m.Attach(context.Background(), "bot", nc); err != nil {
			t.Fatalf("attach after a dead connection: %v", err)
		}
		if waited := time.Since(start); waited != slave.DefaultDuplicatePingTimeout {
			t.Errorf("replaced after %v, want exactly %v", waited, slave.DefaultDuplicatePingTimeout)
		}
		if !old.Closed() {
			t.Error("old connection not closed")
		}
		if cause := context.Cause(b.Context()); !errors.Is(cause, slave.ErrSlaveLost) {
			t.Errorf("build on the old connection: cause %v, want ErrSlaveLost", cause)
		}
		if st := state(t, f.m, "bot"); !st.Attached || st.RemoteAddr != nc.RemoteAddr() || st.Running != 0 {
			t.Errorf("state after replace = %+v", st)
		}
	})
}

// TestLateCleanupOfReplacedConnectionKeepsTheNewOne is Buildbot issue
// 4678: the replaced connection's teardown finishes after the new
// connection registered, and must not unregister it.
func TestLateCleanupOfReplacedConnectionKeepsTheNewOne(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		events, cancel := f.m.Subscribe()
		defer cancel()
		old := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		old.Silent(true)
		old.HoldClose() // its transport teardown will finish late
		nc := slavetest.NewConn(slave.Info{})
		if err := f.m.Attach(context.Background(), "bot", nc); err != nil {
			t.Fatal(err)
		}
		old.ReleaseClose() // the old connection's Done fires only now
		synctest.Wait()
		if st := state(t, f.m, "bot"); !st.Attached || st.RemoteAddr != nc.RemoteAddr() {
			t.Fatalf("late cleanup of the old connection unregistered the new one: %+v", st)
		}
		if nc.Closed() {
			t.Fatal("new connection closed")
		}
		var kinds []slave.EventKind
		for len(kinds) < 3 {
			kinds = append(kinds, (<-events).Kind)
		}
		want := []slave.EventKind{slave.Attached, slave.Detached, slave.Attached}
		for i := range want {
			if kinds[i] != want[i] {
				t.Fatalf("events %v, want %v", kinds, want)
			}
		}
		select {
		case ev := <-events:
			t.Fatalf("unexpected event after the replace: %v", ev.Kind)
		default:
		}
	})
}

func TestDuplicateAttachesOfOneNameDoNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"), mustNew(t, "b", "pw"))
		old := slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
		old.Silent(true)
		done := make(chan error)
		go func() { done <- f.m.Attach(context.Background(), "a", slavetest.NewConn(slave.Info{})) }()
		synctest.Wait() // the duplicate of a is waiting on its ping
		start := time.Now()
		slavetest.Attach(t, f.m, "b", "pw", slave.Info{})
		if time.Since(start) != 0 {
			t.Errorf("attach of b waited %v behind a's duplicate", time.Since(start))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
