// Package latenttest provides a fake cloud of latent slaves for testing code that uses the latent package, as net/http/httptest does for HTTP.
package latenttest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// ErrStopped is the cause of a fake instance's connection when the
// instance is stopped.
var ErrStopped = errors.New("latenttest: instance stopped")

// TB is the part of testing.TB a Cloud uses; *testing.T and *testing.B
// implement it.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Cleanup(func())
}

// Boot is how one fake instance behaves after Start.
type Boot struct {
	// Delay is how long the instance boots before it attaches (or dies).
	Delay time.Duration
	// StartErr makes Start fail with it; nothing is left running.
	StartErr error
	// Die makes the instance die after Delay instead of attaching; Check
	// reports Die from then on.
	Die error
	// Hang makes the instance boot forever: it neither attaches nor dies.
	Hang bool
}

// Record is one entry of the Cloud's ledger: a Start or a Stop call.
type Record struct {
	Op       string // "start" or "stop"
	Instance latent.Instance
	Time     time.Time
	Err      error // the call's error, if it failed
}

// Cloud is a fake provider of instances shared by fake latent slaves. A
// booted instance attaches to the manager as its slave, through
// slavetest, with the password of its start, like a slow cloud machine.
// The Cloud keeps a ledger of every start and stop and fails the test on
// a broken promise of the Lifecycle: two instances of one slave, a stop
// while the instance runs a build, or concurrent calls for one slave.
type Cloud struct {
	t      TB
	m      *slave.Manager
	ctx    context.Context // cancelled at the test's cleanup: ends boots
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	next   int
	live   map[string]*instance // started and not stopped
	ledger []Record
}

type instance struct {
	latent.Instance
	fake    *Fake
	stopped chan struct{}
	dead    error
	conn    *slavetest.Conn
}

// NewCloud returns a Cloud whose instances attach to m. At the end of the
// test it ends the instances' boots and waits for them.
func NewCloud(t TB, m *slave.Manager) *Cloud {
	c := &Cloud{t: t, m: m, live: make(map[string]*instance)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		c.cancel()
		c.wg.Wait()
	})
	return c
}

// Slave returns a fake latent slave of the Cloud for s, which must be
// among the manager's slaves, keeping idle instances for buildWait. Its
// instances behave as boot unless Next scripts otherwise.
func (c *Cloud) Slave(s *slave.Slave, buildWait time.Duration, boot Boot) *Fake {
	return &Fake{c: c, s: s, buildWait: buildWait, boot: boot}
}

// Plant adds a running instance that no Lifecycle started, as a crashed
// master leaves behind; its Started is now.
func (c *Cloud) Plant(slaveName, masterID string) latent.Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.add(slaveName, masterID, nil)
	return i.Instance
}

// add makes a live instance; c.mu is held.
func (c *Cloud) add(slaveName, masterID string, f *Fake) *instance {
	c.next++
	i := &instance{
		Instance: latent.Instance{ID: fmt.Sprintf("i-%05d", c.next), Slave: slaveName, MasterID: masterID, Started: time.Now()},
		fake:     f,
		stopped:  make(chan struct{}),
	}
	c.live[i.ID] = i
	return i
}

// Running returns the instances started (or planted) and not stopped,
// sorted by id.
func (c *Cloud) Running() []latent.Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]latent.Instance, 0, len(c.live))
	for _, i := range c.live {
		out = append(out, i.Instance)
	}
	slices.SortFunc(out, func(a, b latent.Instance) int {
		return cmp.Or(cmp.Compare(len(a.ID), len(b.ID)), strings.Compare(a.ID, b.ID))
	})
	return out
}

// Ledger returns every Start and Stop call so far, oldest first.
func (c *Cloud) Ledger() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ledger)
}

// AssertNoneRunning fails t for each instance still running: every start
// must have had its stop.
func (c *Cloud) AssertNoneRunning(t TB) {
	t.Helper()
	for _, i := range c.Running() {
		t.Errorf("latenttest: instance %s of slave %s (master %s, started %v) is still running", i.ID, i.Slave, i.MasterID, i.Started)
	}
}

// record appends to the ledger; c.mu is held.
func (c *Cloud) record(op string, inst latent.Instance, err error) {
	c.ledger = append(c.ledger, Record{Op: op, Instance: inst, Time: time.Now(), Err: err})
}

// boot runs one instance's boot, then attaches it.
func (c *Cloud) boot(i *instance, password string, b Boot) {
	t := time.NewTimer(b.Delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-i.stopped:
		return
	case <-c.ctx.Done():
		return
	}
	if b.Hang {
		return
	}
	c.mu.Lock()
	if c.live[i.ID] != i {
		c.mu.Unlock()
		return
	}
	if b.Die != nil {
		i.dead = b.Die
		c.mu.Unlock()
		return
	}
	conn := slavetest.NewConn(slave.Info{Admin: "latenttest", Host: i.ID})
	i.conn = conn
	c.mu.Unlock()
	// A refusal is logged by the manager; the instance stays up, unattached.
	if err := c.m.Authenticate(i.Slave, password, conn.RemoteAddr()); err != nil {
		return
	}
	if err := c.m.Attach(c.ctx, i.Slave, conn); err != nil {
		conn.Close()
	}
}

// Fake is a fake latent slave of a Cloud. It implements latent.LatentSlave,
// latent.Lister and latent.Checker.
type Fake struct {
	c         *Cloud
	s         *slave.Slave
	buildWait time.Duration

	mu       sync.Mutex
	boot     Boot
	script   []Boot
	stopErrs []error
	calling  string // the call in progress, to catch concurrent calls
}

var (
	_ latent.LatentSlave    = (*Fake)(nil)
	_ latent.Lister         = (*Fake)(nil)
	_ latent.Checker        = (*Fake)(nil)
	_ latent.BuildWaiter    = (*Fake)(nil)
	_ latent.PasswordPasser = (*Fake)(nil)
)

// Next scripts how the next instances behave, in order; after them,
// instances behave as the Boot given to Cloud.Slave.
func (f *Fake) Next(boots ...Boot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, boots...)
}

// FailStops makes the next len(errs) Stop calls fail with errs, in order,
// leaving their instances running.
func (f *Fake) FailStops(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopErrs = append(f.stopErrs, errs...)
}

// Crash kills the slave's attached instance, as a machine failure does:
// its connection drops with cause and Check reports cause. It reports
// whether there was an attached instance to crash.
func (f *Fake) Crash(cause error) bool {
	c := f.c
	c.mu.Lock()
	var conn *slavetest.Conn
	for _, i := range c.live {
		if i.fake == f && i.conn != nil && i.dead == nil {
			i.dead = cause
			conn = i.conn
		}
	}
	c.mu.Unlock()
	if conn == nil {
		return false
	}
	conn.Drop(cause)
	return true
}

// Conn returns the connection of the slave's live instance, or nil.
func (f *Fake) Conn() *slavetest.Conn {
	c := f.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range c.live {
		if i.fake == f && i.conn != nil {
			return i.conn
		}
	}
	return nil
}

// Slave is the slave's configuration.
func (f *Fake) Slave() *slave.Slave { return f.s }

// BuildWaitTimeout is the buildWait given to Cloud.Slave.
func (f *Fake) BuildWaitTimeout() time.Duration { return f.buildWait }

// PassesPassword reports true: a fake instance attaches with its start's
// password, so no other password admits an attach while it starts.
func (f *Fake) PassesPassword() bool { return true }

// enter marks a call in progress, failing the test if another is.
func (f *Fake) enter(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calling != "" {
		f.c.t.Errorf("latenttest: %s of slave %s called during %s", call, f.s.Name(), f.calling)
	}
	f.calling = call
}

func (f *Fake) leave() {
	f.mu.Lock()
	f.calling = ""
	f.mu.Unlock()
}

// Start starts an instance that boots as scripted, then attaches with
// req's password. It fails the test if the slave has a live instance.
func (f *Fake) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	f.enter("Start")
	defer f.leave()
	f.mu.Lock()
	b := f.boot
	if len(f.script) > 0 {
		b = f.script[0]
		f.script = f.script[1:]
	}
	f.mu.Unlock()

	c := f.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range c.live {
		if i.Slave == req.Name && i.MasterID == req.MasterID {
			c.t.Errorf("latenttest: second instance of slave %s started while %s is running", req.Name, i.ID)
		}
	}
	if b.StartErr != nil {
		c.record("start", latent.Instance{Slave: req.Name, MasterID: req.MasterID, Started: time.Now()}, b.StartErr)
		return latent.Instance{}, b.StartErr
	}
	i := c.add(req.Name, req.MasterID, f)
	c.record("start", i.Instance, nil)
	c.wg.Go(func() { c.boot(i, req.Password, b) })
	return i.Instance, nil
}

// Stop stops the instance and drops its connection. It fails the test if
// the instance's connection runs a build. Stopping an instance that is
// gone is not an error.
func (f *Fake) Stop(ctx context.Context, inst latent.Instance) error {
	f.enter("Stop")
	defer f.leave()
	c := f.c
	f.mu.Lock()
	var err error
	if len(f.stopErrs) > 0 {
		err = f.stopErrs[0]
		f.stopErrs = f.stopErrs[1:]
	}
	f.mu.Unlock()

	c.mu.Lock()
	c.record("stop", inst, err)
	i := c.live[inst.ID]
	if err != nil || i == nil {
		c.mu.Unlock()
		return err
	}
	if i.conn != nil {
		if st, _ := c.m.State(i.Slave); st.Attached && st.RemoteAddr == i.conn.RemoteAddr() && st.Running > 0 {
			c.t.Errorf("latenttest: instance %s of slave %s stopped while it runs %d builds", i.ID, i.Slave, st.Running)
		}
	}
	delete(c.live, i.ID)
	close(i.stopped)
	conn := i.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Drop(ErrStopped)
	}
	return nil
}

// List returns the Cloud's live instances tagged with masterID, of every
// slave.
func (f *Fake) List(ctx context.Context, masterID string) ([]latent.Instance, error) {
	var out []latent.Instance
	for _, i := range f.c.Running() {
		if i.MasterID == masterID {
			out = append(out, i)
		}
	}
	return out, nil
}

// Check reports an instance that died or vanished.
func (f *Fake) Check(ctx context.Context, inst latent.Instance) error {
	c := f.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.live[inst.ID]
	switch {
	case i == nil:
		return fmt.Errorf("latenttest: instance %s is gone", inst.ID)
	case i.dead != nil:
		return i.dead
	}
	return nil
}
