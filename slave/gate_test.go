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

// memGate is a slave.Gate in memory: Claim fails with down while it is set.
type memGate struct {
	mu        sync.Mutex
	down      error
	owned     map[string]bool
	elsewhere map[string]bool // held by another master
	released  []*slave.MissingNotice
	holder    slave.Holder
}

func (g *memGate) Claim(_ context.Context, name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down != nil {
		return g.down
	}
	g.owned[name] = true
	return nil
}

func (g *memGate) Release(_ context.Context, name string, missing *slave.MissingNotice) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.owned, name)
	g.released = append(g.released, missing)
	return nil
}

func (g *memGate) Hold(h slave.Holder) { g.holder = h }

// SendMissing sends the notice of a slave no other master holds (in
// elsewhere).
func (g *memGate) SendMissing(ctx context.Context, missing slave.MissingNotice, send func(context.Context) error) error {
	g.mu.Lock()
	held := g.elsewhere[missing.Slave]
	g.mu.Unlock()
	if held {
		return nil
	}
	return send(ctx)
}

func (g *memGate) set(down error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
}

func (g *memGate) state() (owned bool, released []*slave.MissingNotice) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.owned["bot"], g.released
}

func TestGateClaimsAtAttachAndReleasesWithTheMissingNotice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &memGate{owned: map[string]bool{}}
		f := newFixture(t, slave.Config{Gate: g}, mustNew(t, "bot", "pw", slave.MissingTimeout(time.Minute), slave.NotifyOnMissing("ops@example.org")))
		if g.holder != f.m {
			t.Fatal("NewManager did not hand the manager to Gate.Hold")
		}
		c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{Admin: "Ann"})
		if owned, _ := g.state(); !owned {
			t.Fatal("attached without a claim")
		}
		c.Drop(nil)
		synctest.Wait()
		owned, released := g.state()
		if owned || len(released) != 1 || released[0] == nil {
			t.Fatalf("after the detach: owned %v, released %v; want one release with a notice", owned, released)
		}
		n := released[0]
		if n.Slave != "bot" || n.Admin != "Ann" || n.Recipients[0] != "ops@example.org" || !n.Due.Equal(time.Now().Add(time.Minute)) {
			t.Errorf("notice = %+v, want bot's, due in a minute", n)
		}
	})
}

func TestGateDownRefusesNewNamesAndLogsOncePerChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &memGate{owned: map[string]bool{}}
		f := newFixture(t, slave.Config{Gate: g}, mustNew(t, "bot", "pw"), mustNew(t, "held", "pw"))
		held := slavetest.Attach(t, f.m, "held", "pw", slave.Info{})
		g.set(errors.New("etcd unreachable"))
		for range 3 {
			err := f.m.Attach(t.Context(), "bot", slavetest.NewConn(slave.Info{}))
			if !errors.Is(err, slave.ErrUnclaimed) {
				t.Fatalf("attach while the gate is down = %v, want ErrUnclaimed", err)
			}
		}
		if st := state(t, f.m, "held"); !st.Attached || held.Closed() {
			t.Error("a held slave was dropped while the gate is down")
		}
		g.set(nil)
		slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		if n := len(f.log.Matching("slave gate unavailable", "etcd unreachable")); n != 1 {
			t.Errorf("%d 'unavailable' lines, want 1:\n%s", n, f.log.String())
		}
		if n := len(f.log.Matching("slave gate available again")); n != 1 {
			t.Errorf("%d 'available again' lines, want 1:\n%s", n, f.log.String())
		}
		if n := len(f.log.Matching("refused")); n != 0 {
			t.Errorf("%d refusal lines, want none (the state change says it):\n%s", n, f.log.String())
		}
	})
}

func TestGateDecidesMissingNotices(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &memGate{owned: map[string]bool{}, elsewhere: map[string]bool{"elsewhere": true}}
		opts := []slave.Option{slave.MissingTimeout(time.Minute), slave.NotifyOnMissing("ops@example.org")}
		f := newFixture(t, slave.Config{Gate: g}, mustNew(t, "bot", "pw", opts...), mustNew(t, "elsewhere", "pw", opts...))
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got := f.sent.Missing(); len(got) != 1 || got[0].Slave != "bot" {
			t.Fatalf("notices = %+v, want bot's only (elsewhere is attached to another master)", got)
		}
		if !state(t, f.m, "bot").Missing || state(t, f.m, "elsewhere").Missing {
			t.Error("missing flags do not follow the gate")
		}
	})
}
