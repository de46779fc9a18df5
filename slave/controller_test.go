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

// control makes g the manager's Controller, controlling the slave "latent".
func (g *gate) control(t *testing.T, m *slave.Manager) *slave.Control {
	t.Helper()
	c, err := m.SetController(g)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(mustNew(t, "latent", "configured")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (g *gate) wants() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.wanted...)
}

func TestControllerDecidesLoginsOfItsSlaves(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "latent", "configured"), mustNew(t, "plain", "pw"))
	g := &gate{pass: "per-start"}
	g.control(t, f.m)
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
		if err := g.control(t, f.m).Set(mustNew(t, "latent", "pw", slave.MaxBuilds(1))); err != nil {
			t.Fatal(err)
		}
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
	f := newFixture(t, slave.Config{})
	ctl := (&gate{pass: "pw"}).control(t, f.m)
	c := slavetest.Attach(t, f.m, "latent", "pw", slave.Info{})
	b, _ := f.m.TryAcquire("latent")
	if err := ctl.Drain("latent"); !errors.Is(err, slave.ErrBusy) {
		t.Errorf("Drain with a build = %v", err)
	}
	b.Release()
	if err := ctl.Drain("latent"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.TryAcquire("latent"); !errors.Is(err, slave.ErrNoSlot) {
		t.Errorf("drained slave took a build: %v", err)
	}
	// A late attach after the machine was stopped takes no build either.
	c.Drop(nil)
	slavetest.Attach(t, f.m, "latent", "pw", slave.Info{})
	if _, err := f.m.TryAcquire("latent"); !errors.Is(err, slave.ErrNoSlot) {
		t.Errorf("drain ended with a detach: %v", err)
	}
	if err := ctl.Undrain("latent"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.TryAcquire("latent"); err != nil {
		t.Errorf("undrained slave: %v", err)
	}
}

func TestControlOnlyReachesControlledSlaves(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "plain", "pw"))
	ctl := (&gate{pass: "pw"}).control(t, f.m)
	slavetest.Attach(t, f.m, "plain", "pw", slave.Info{})
	for name, err := range map[string]error{
		"Drain":      ctl.Drain("plain"),
		"Undrain":    ctl.Undrain("plain"),
		"Remove":     ctl.Remove("plain"),
		"Disconnect": ctl.Disconnect("plain", errors.New("x")),
	} {
		if !errors.Is(err, slave.ErrUnknownSlave) {
			t.Errorf("%s of a static slave = %v, want ErrUnknownSlave", name, err)
		}
	}
	if _, err := f.m.TryAcquire("plain"); err != nil {
		t.Errorf("static slave after Control calls: %v", err)
	}
	if _, err := f.m.SetController(&gate{}); !errors.Is(err, slave.ErrController) {
		t.Errorf("second SetController = %v", err)
	}
}

// A Reconfigure that leaves out a controlled slave does not forget it,
// and one that names it is refused: only its Controller changes it.
func TestReconfigureCannotForgetOrTakeAControlledSlave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "plain", "pw"))
		ctl := (&gate{pass: "per-start"}).control(t, f.m)
		if err := f.m.Reconfigure(mustNew(t, "plain", "pw")); err != nil {
			t.Fatal(err)
		}
		if _, ok := f.m.State("latent"); !ok {
			t.Fatal("Reconfigure without the latent slave forgot it")
		}
		if err := f.m.Authenticate("latent", "per-start", "127.0.0.1:1"); err != nil {
			t.Errorf("login after Reconfigure: %v", err)
		}
		var cerr *slave.ConfigError
		err := f.m.Reconfigure(mustNew(t, "plain", "pw"), mustNew(t, "latent", "static"))
		if !errors.As(err, &cerr) || cerr.Slave != "latent" || cerr.Field != "name" {
			t.Errorf("Reconfigure naming a latent slave = %v", err)
		}
		if err := f.m.Authenticate("latent", "static", "127.0.0.1:2"); err == nil {
			t.Error("a refused Reconfigure took the latent slave's name")
		}

		// Remove forgets it: waiters fail, logins are unknown, and the
		// name is free for a static slave.
		waited := make(chan error, 1)
		go func() { _, err := f.m.Acquire(context.Background(), "latent"); waited <- err }()
		synctest.Wait()
		if err := ctl.Remove("latent"); err != nil {
			t.Fatal(err)
		}
		if err := <-waited; !errors.Is(err, slave.ErrUnknownSlave) {
			t.Errorf("waiter of a removed slave got %v", err)
		}
		if err := f.m.Authenticate("latent", "per-start", "127.0.0.1:3"); !errors.Is(err, slave.ErrUnknownSlave) {
			t.Errorf("login of a removed slave = %v", err)
		}
		if err := f.m.Reconfigure(mustNew(t, "plain", "pw"), mustNew(t, "latent", "static")); err != nil {
			t.Errorf("static slave under a removed latent name: %v", err)
		}
	})
}

// Set adopts a slave given to NewManager, and changes a controlled one's
// settings at once.
func TestSetAdoptsAndChanges(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "latent", "configured", slave.MaxBuilds(1)))
	ctl, err := f.m.SetController(&gate{pass: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Set(mustNew(t, "latent", "configured", slave.MaxBuilds(2))); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Reconfigure(); err != nil {
		t.Fatal(err)
	}
	if st := state(t, f.m, "latent"); st.MaxBuilds != 2 {
		t.Errorf("max_builds %d after Set, want 2", st.MaxBuilds)
	}
}

func TestFailWaitersFailsThoseWaitingForTheSlaveAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "plain", "pw"))
		ctl := (&gate{pass: "pw"}).control(t, f.m)
		alone, either := make(chan error, 1), make(chan error, 1)
		go func() { _, err := f.m.Acquire(context.Background(), "latent"); alone <- err }()
		go func() { _, err := f.m.Acquire(context.Background(), "latent", "plain"); either <- err }()
		synctest.Wait()
		if n := ctl.Waiting("latent"); n != 2 {
			t.Fatalf("Waiting = %d, want 2", n)
		}
		boom := errors.New("instance never attached")
		if n := ctl.FailWaiters("latent", boom); n != 1 {
			t.Fatalf("FailWaiters failed %d, want 1", n)
		}
		if err := <-alone; !errors.Is(err, boom) {
			t.Errorf("lone waiter got %v", err)
		}
		if n := ctl.Waiting("latent"); n != 1 {
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
		f := newFixture(t, slave.Config{})
		ctl := (&gate{pass: "pw"}).control(t, f.m)
		if err := ctl.Disconnect("latent", errors.New("x")); !errors.Is(err, slave.ErrNotAttached) {
			t.Errorf("Disconnect of a detached slave = %v", err)
		}
		c := slavetest.Attach(t, f.m, "latent", "pw", slave.Info{})
		events, cancel := f.m.Subscribe()
		defer cancel()
		gone := errors.New("instance terminated")
		if err := ctl.Disconnect("latent", gone); err != nil {
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
		(&gate{pass: "pw"}).control(t, f.m)
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

// Set takes effect at once on an attached controlled slave, its
// keepalive interval included.
func TestSetRestartsKeepaliveAtTheNewInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{})
		ctl := (&gate{pass: "pw"}).control(t, f.m)
		c := slavetest.Attach(t, f.m, "latent", "pw", slave.Info{})
		if err := ctl.Set(mustNew(t, "latent", "configured", slave.KeepaliveInterval(time.Minute))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if c.Keepalives() != 1 {
			t.Fatalf("%d keepalives one minute after the change", c.Keepalives())
		}
		f.m.Close()
	})
}
