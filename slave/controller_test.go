package slave_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"

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
func (g *gate) Admit(name, password string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if password != g.pass {
		return errors.New("no substantiation is waiting for this slave")
	}
	return nil
}
func (g *gate) Want(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wanted = append(g.wanted, name)
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
	if err == nil || len(f.log.matching("refused", "slave=latent", "no substantiation")) != 1 {
		t.Errorf("controller's refusal not used: %v\n%s", err, f.log.lines())
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

func TestDrainRefusesBusySlavesAndBlocksNewBuilds(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "a", "pw"))
	if err := f.m.Drain("a"); !errors.Is(err, slave.ErrNotAttached) {
		t.Errorf("Drain of a detached slave = %v", err)
	}
	slavetest.Attach(t, f.m, "a", "pw", slave.Info{})
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
	f.m.Undrain("a")
	if _, err := f.m.TryAcquire("a"); err != nil {
		t.Errorf("undrained slave: %v", err)
	}
}
