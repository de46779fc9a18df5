package slave_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// gate controls the slave "latent": it admits one password and records wants.
type gate struct {
	mu     sync.Mutex
	pass   string
	wanted []string
}

func (g *gate) Controls(name string) bool { return name == "latent" }
func (g *gate) Admit(name string, proof slave.Proof) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !proof.Proves(g.pass) {
		return errors.New("no substantiation is waiting for this slave")
	}
	return nil
}
func (g *gate) Want(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wanted = append(g.wanted, name)
	return true
}
func (g *gate) wants() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.wanted...)
}

func TestControllerDecidesLoginsOfItsSlaves(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "latent", "configured"), mustNew(t, "plain", "pw"))
	g := &gate{pass: "per-start"}
	f.m.SetController(g)
	if err := f.m.Authenticate("latent", "per-start", "127.0.0.1:1"); err != nil {
		t.Errorf("controller's password refused: %v", err)
	}
	err := f.m.Authenticate("latent", "configured", "127.0.0.1:2")
	if err == nil || len(f.log.Matching("refused", "slave=latent", "no substantiation")) != 1 {
		t.Errorf("controller's refusal not used: %v\n%s", err, f.log.Lines())
	}
	if err := f.m.Authenticate("plain", "pw", "127.0.0.1:3"); err != nil {
		t.Errorf("uncontrolled slave: %v", err)
	}
}

func TestControllerIsToldWhatIsWanted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "latent", "pw", slave.MaxBuilds(1)), mustNew(t, "plain", "pw"))
		g := &gate{pass: "pw"}
		f.m.SetController(g)
		go f.m.Acquire(context.Background(), "plain", "latent")
		synctest.Wait()
		if w := g.wants(); len(w) != 1 || w[0] != "latent" {
			t.Fatalf("wanted %v, want [latent]", w)
		}
		c := slavetest.Attach(t, f.m, "latent", "pw", slave.Info{}) // takes the waiting build
		go f.m.Acquire(context.Background(), "latent")
		synctest.Wait()
		if w := g.wants(); len(w) != 1 {
			t.Fatalf("wanted %v while attached", w)
		}
		c.Drop(nil) // the waiting Acquire wants it again
		synctest.Wait()
		if w := g.wants(); len(w) != 2 {
			t.Fatalf("wanted %v after the loss, want a second want", w)
		}
		f.m.Close()
	})
}

func TestDrainRefusesBusySlavesAndLastsUntilUndrain(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
	c := slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
	b, _ := f.m.TryAcquire("a")
	if err := f.m.Drain("a"); !errors.Is(err, slave.ErrBusy) {
		t.Errorf("Drain with a build = %v", err)
	}
	b.Release()
	if err := f.m.Drain("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.TryAcquire("a"); !errors.Is(err, slave.ErrNoSlot) {
		t.Errorf("drained slave took a build: %v", err)
	}
	// A late attach after the machine was stopped takes no build either.
	c.Drop(nil)
	slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
	if _, err := f.m.TryAcquire("a"); !errors.Is(err, slave.ErrNoSlot) {
		t.Errorf("drain ended with a detach: %v", err)
	}
	f.m.Undrain("a")
	if _, err := f.m.TryAcquire("a"); err != nil {
		t.Errorf("undrained slave: %v", err)
	}
}

func TestFailWaitersFailsThoseWaitingForTheSlaveAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "latent", "pw"), mustNew(t, "plain", "pw"))
		alone, either := make(chan error, 1), make(chan error, 1)
		go func() { _, err := f.m.Acquire(context.Background(), "latent"); alone <- err }()
		go func() { _, err := f.m.Acquire(context.Background(), "latent", "plain"); either <- err }()
		synctest.Wait()
		if n := f.m.Waiting("latent"); n != 2 {
			t.Fatalf("Waiting = %d, want 2", n)
		}
		boom := errors.New("instance never attached")
		if n := f.m.FailWaiters("latent", boom); n != 1 {
			t.Fatalf("FailWaiters failed %d, want 1", n)
		}
		if err := <-alone; !errors.Is(err, boom) {
			t.Errorf("lone waiter got %v", err)
		}
		if n := f.m.Waiting("latent"); n != 1 {
			t.Errorf("Waiting after = %d, want the one that also waits for plain", n)
		}
		slavetest.Attach(t, f.m, "plain", "pw", slave.Info{})
		if err := <-either; err != nil {
			t.Errorf("waiter for either got %v", err)
		}
	})
}

func TestDisconnectDropsTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
		if err := f.m.Disconnect("a", errors.New("x")); !errors.Is(err, slave.ErrNotAttached) {
			t.Errorf("Disconnect of a detached slave = %v", err)
		}
		c := slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
		events, cancel := f.m.Subscribe()
		defer cancel()
		gone := errors.New("instance terminated")
		if err := f.m.Disconnect("a", gone); err != nil {
			t.Fatal(err)
		}
		ev := <-events
		if !c.Closed() || ev.Kind != slave.Detached || !errors.Is(ev.Err, gone) {
			t.Errorf("closed %v, event %v %v", c.Closed(), ev.Kind, ev.Err)
		}
	})
}

func TestControlledSlavesAreNeverMissing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{},
			mustNew(t, "latent", "pw", slave.NotifyOnMissing("a@example.com")),
			mustNew(t, "plain", "pw", slave.NotifyOnMissing("a@example.com")))
		f.m.SetController(&gate{pass: "pw"})
		c := slavetest.Attach(t, f.m, "latent", "pw", slave.Info{})
		c.Drop(nil) // a stopped latent slave
		time.Sleep(48 * time.Hour)
		synctest.Wait()
		got := f.sent.Missing()
		if len(got) != 1 || got[0].Slave != "plain" {
			t.Errorf("notices %+v, want one for plain only", got)
		}
		if state(t, f.m, "latent").Missing {
			t.Error("latent slave marked missing")
		}
	})
}
