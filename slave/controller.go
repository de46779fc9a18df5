package slave

import (
	"errors"
	"fmt"

	"github.com/buildslave/buildslave/keepalive"
)

// Controller takes part in the life of the slaves whose machines it
// starts and stops on demand: the latent package's Lifecycle is one. The
// manager calls it without holding its own lock, and its methods must not
// block.
type Controller interface {
	// Admit decides a login under a controlled name, in place of the
	// manager's password check: it sees the proof the connection offered,
	// and an error refuses the login (the manager logs the error as the
	// reason, never the password).
	Admit(name string, proof Proof) error
	// Want tells that an Acquire waits for the named controlled slave
	// while it is not attached, and reports whether the controller starts
	// a new instance for it. For an Acquire on several slaves the manager
	// asks them in order and stops at the first that starts one, so that
	// one build does not start an instance of every slave it could use.
	Want(name string) bool
}

// Control is what a Controller may do to the slaves it controls; the
// manager hands it out once, from SetController. Every other importer of
// the package needs none of it.
//
// A controlled slave belongs to its Controller alone: only Control.Set
// adds or changes it and only Control.Remove forgets it, so that the
// manager can never forget a slave whose machine the Controller may still
// start or run (Manager.Reconfigure refuses its name). Its missing timer
// is never armed: a stopped latent slave is not missing, and the
// Controller reports instances that never attach.
//
// Lock order, the one rule a driver and the manager share: a Controller
// may call Control's methods while holding its own locks, and the manager
// never calls the Controller while holding its lock. So either side can
// change its locking without reading the other's.
type Control struct {
	m *Manager
}

// ErrController: SetController was called twice on one manager.
var ErrController = errors.New("slave: the manager has a Controller already")

// SetController makes c the Controller of the slaves it adds through the
// returned Control. A manager has at most one Controller.
func (m *Manager) SetController(c Controller) (*Control, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctl != nil {
		return nil, ErrController
	}
	m.ctl = c
	return &Control{m: m}, nil
}

// controller returns the Controller, if any.
func (m *Manager) controller() Controller {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ctl
}

// want tells the Controller, if any, that an Acquire waits for these
// detached controlled slaves, in order, until one of them starts.
func (m *Manager) want(names ...string) {
	c := m.controller()
	if c == nil {
		return
	}
	for _, name := range names {
		if c.Want(name) {
			return
		}
	}
}

// CheckPassword reports whether password is the slave's, in constant time.
func (s *Slave) CheckPassword(password string) bool { return s.Accepts(Password(password)) }

// Accepts reports whether proof was made with the slave's password, in
// constant time.
func (s *Slave) Accepts(proof Proof) bool { return proof.Proves(s.password) }

// ErrBusy: Drain found builds running on the slave.
var ErrBusy = errors.New("slave has builds running")

// errNotControlled refuses a Control call on a slave the Controller does
// not control.
var errNotControlled = errors.New("not a controlled slave")

// controlled returns the named controlled slave; m.mu is held.
func (m *Manager) controlled(name string) (*entry, error) {
	e, err := m.lookup(name)
	switch {
	case err != nil:
		return nil, err
	case !e.controlled:
		return nil, fmt.Errorf("%w: %q is %w", ErrUnknownSlave, name, errNotControlled)
	}
	return e, nil
}

// Set makes s a controlled slave: a new one, or one the manager already
// knows under that name (given to NewManager or Reconfigure, or Set
// before), whose settings s replaces at once, as Reconfigure does for a
// static slave. A drained slave stays drained.
func (c *Control) Set(s *Slave) error {
	if err := checkUnique([]*Slave{s}); err != nil {
		return err
	}
	m := c.m
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return ErrClosed
	}
	e := m.slaves[s.name]
	if e == nil {
		e = newEntry(s)
		m.slaves[s.name] = e
	}
	old := e.cfg
	e.cfg, e.removed, e.controlled = s, false, true
	m.disarmMissing(e)
	var stop *keepalive.Loop // replaced: its interval changed
	if e.att != nil && old.keepaliveInterval != s.keepaliveInterval {
		stop = e.att.keepalive
		e.att.keepalive = m.startKeepalive(e.att)
	}
	m.serveWaiters(e)
	m.mu.Unlock()
	if stop != nil {
		stop.Stop() // outside the lock: Stop waits for callbacks that take it
	}
	return nil
}

// Remove forgets the named controlled slave, as Reconfigure forgets a
// static slave it no longer lists: Acquires waiting for it alone fail, a
// connection still attached is dropped, and logins under its name are
// refused from now on. The Controller calls it once the slave's machine
// is stopped.
func (c *Control) Remove(name string) error {
	m := c.m
	m.mu.Lock()
	e, err := m.controlled(name)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	a := m.remove(e)
	m.mu.Unlock()
	if a != nil {
		m.log.Info("slave removed from the configuration; disconnecting", "slave", name)
		a.lose(errRemoved)
	}
	return nil
}

// Drain stops the named slave from taking new builds, if it has none
// running; it fails with ErrBusy otherwise. A Controller drains a slave
// before it stops the slave's machine, so that no build can start in
// between, and also when a start failed, so that an instance that still
// attaches late takes no build. The drain lasts, across detaches and
// attaches, until Undrain.
func (c *Control) Drain(name string) error {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.controlled(name)
	switch {
	case err != nil:
		return err
	case len(e.builds) > 0:
		return fmt.Errorf("%w: %q has %d", ErrBusy, name, len(e.builds))
	}
	e.draining = true
	return nil
}

// Undrain lets a drained slave take builds again: a Controller undrains a
// slave when the instance it started has attached.
func (c *Control) Undrain(name string) error {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.controlled(name)
	if err != nil {
		return err
	}
	e.draining = false
	m.serveWaiters(e)
	return nil
}

// Waiting counts the Acquires that wait for the named slave (alone or
// among others).
func (c *Control) Waiting(name string) int {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, err := m.controlled(name); err == nil {
		return e.waiters.Len()
	}
	return 0
}

// FailWaiters fails, with err, every Acquire that waits for the named
// slave alone, and returns how many it failed; Acquires that also wait
// for other slaves go on waiting for those. A Controller calls it when a
// start failed, so that callers learn why instead of waiting on.
func (c *Control) FailWaiters(name string, err error) int {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	e, cerr := m.controlled(name)
	if cerr != nil {
		return 0
	}
	n := 0
	for el := e.waiters.Front(); el != nil; {
		next := el.Next()
		if w := el.Value.(*waiter); len(w.elems) == 1 {
			unlink(w)
			w.ch <- grant{err: err}
			n++
		}
		el = next
	}
	return n
}

// Disconnect drops the named slave's connection at once, for reason; a
// Controller calls it when the slave's machine is gone but its connection
// lingers.
func (c *Control) Disconnect(name string, reason error) error {
	m := c.m
	m.mu.Lock()
	e, err := m.controlled(name)
	var a *attachment
	if err == nil {
		a = e.att
	}
	m.mu.Unlock()
	switch {
	case err != nil:
		return err
	case a == nil:
		return fmt.Errorf("%w: %q", ErrNotAttached, name)
	}
	a.lose(reason)
	return nil
}
