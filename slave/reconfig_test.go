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

func TestReconfigureAddsChangesAndRemovesWhileOthersStayAttached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{},
			mustNew(t, "keep", "pw", slave.MaxBuilds(1)),
			mustNew(t, "drop", "pw"),
			mustNew(t, "busy", "pw"))
		keep := slavetest.Attach(t, f.m, "keep", "pw", slave.Info{})
		drop := slavetest.Attach(t, f.m, "drop", "pw", slave.Info{})
		busy := slavetest.Attach(t, f.m, "busy", "pw", slave.Info{})
		kb, _ := f.m.TryAcquire("keep")
		bb, _ := f.m.TryAcquire("busy")

		err := f.m.Reconfigure(
			mustNew(t, "keep", "newpw", slave.MaxBuilds(2), slave.Properties(map[string]any{"os": "linux"})),
			mustNew(t, "new", "pw"))
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()

		// Changed: same connection, same build, new settings at once.
		st := state(t, f.m, "keep")
		if !st.Attached || keep.Closed() || kb.Context().Err() != nil || st.MaxBuilds != 2 || st.Properties["os"] != "linux" {
			t.Errorf("changed slave: %+v", st)
		}
		if _, err := f.m.TryAcquire("keep"); err != nil {
			t.Errorf("new max_builds not applied: %v", err)
		}
		if err := f.m.Authenticate("keep", "pw", "127.0.0.1:1"); !errors.Is(err, slave.ErrBadPassword) {
			t.Errorf("old password still accepted: %v", err)
		}
		// Added.
		slavetest.Attach(t, f.m, "new", "pw", slave.Info{})
		// Removed and idle: disconnected now, and gone.
		if !drop.Closed() {
			t.Error("removed idle slave still connected")
		}
		if _, ok := f.m.State("drop"); ok {
			t.Error("removed slave still has a state")
		}
		if err := f.m.Authenticate("drop", "pw", "127.0.0.1:1"); !errors.Is(err, slave.ErrUnknownSlave) {
			t.Errorf("removed slave can still log in: %v", err)
		}
		// Removed with a build: the build goes on, no new builds, then it is disconnected.
		if busy.Closed() || bb.Context().Err() != nil {
			t.Fatal("removed slave lost its running build")
		}
		if _, err := f.m.TryAcquire("busy"); !errors.Is(err, slave.ErrUnknownSlave) {
			t.Errorf("removed slave took a new build: %v", err)
		}
		bb.Release()
		synctest.Wait()
		if !busy.Closed() {
			t.Error("removed slave not disconnected after its last build")
		}
		names := []string{}
		for _, s := range f.m.Slaves() {
			names = append(names, s.Name())
		}
		if len(names) != 2 || names[0] != "keep" || names[1] != "new" {
			t.Errorf("slaves = %v", names)
		}
	})
}

func TestReconfigureRefusesDuplicatesAndChangesNothing(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
	err := f.m.Reconfigure(mustNew(t, "b", "pw"), mustNew(t, "b", "pw2"))
	if err == nil {
		t.Fatal("duplicate accepted")
	}
	if _, ok := f.m.State("a"); !ok {
		t.Error("failed reconfigure changed the slaves")
	}
}

func TestReconfigureFailsWaitersOfRemovedSlaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
		errc := make(chan error)
		go func() {
			_, err := f.m.Acquire(context.Background(), "a")
			errc <- err
		}()
		synctest.Wait()
		if err := f.m.Reconfigure(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, slave.ErrUnknownSlave) {
			t.Fatalf("waiter got %v", err)
		}
	})
}

func TestReconfigureRestartsKeepaliveAtTheNewInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
		c := slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
		if err := f.m.Reconfigure(mustNew(t, "a", "pw", slave.KeepaliveInterval(time.Minute))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if c.Keepalives() != 1 {
			t.Fatalf("%d keepalives one minute after the change", c.Keepalives())
		}
	})
}

func TestShutdownDrainsBuildsThenDisconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
		c := slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
		b, _ := f.m.TryAcquire("a")
		done := make(chan error)
		go func() { done <- f.m.Shutdown(context.Background()) }()
		synctest.Wait()
		if c.Closed() {
			t.Fatal("disconnected during a build")
		}
		if _, err := f.m.TryAcquire("a"); !errors.Is(err, slave.ErrClosed) {
			t.Errorf("new build during shutdown: %v", err)
		}
		if err := f.m.Attach(context.Background(), "a", slavetest.NewConn(slave.Info{})); err == nil {
			t.Error("attach accepted during shutdown")
		}
		time.Sleep(time.Minute)
		b.Release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !c.Closed() {
			t.Error("still connected after shutdown")
		}
	})
}

func TestShutdownStopsAtItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
		slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
		b, _ := f.m.TryAcquire("a")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.m.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v", err)
		}
		f.m.Close()
		if !errors.Is(context.Cause(b.Context()), slave.ErrSlaveLost) {
			t.Errorf("Close left the build running: %v", context.Cause(b.Context()))
		}
	})
}

func TestSubscribeSeesEventsInOrderAndEndsOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
		events, _ := f.m.Subscribe()
		c := slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
		b, _ := f.m.TryAcquire("a")
		b.Release()
		f.m.Pause("a")
		f.m.Unpause("a")
		f.m.Authenticate("a", "bad", "127.0.0.1:9")
		c.Drop(nil)
		synctest.Wait()
		f.m.Close()
		var got []slave.EventKind
		for ev := range events {
			got = append(got, ev.Kind)
		}
		want := []slave.EventKind{slave.Attached, slave.BuildStarted, slave.BuildFinished, slave.Paused, slave.Unpaused, slave.Refused, slave.Detached}
		if len(got) != len(want) {
			t.Fatalf("events %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("events %v, want %v", got, want)
			}
		}
	})
}
