package slave

import (
	"errors"
	"fmt"
)

// Controller takes part in the life of slaves whose machines it starts
// and stops on demand: the latent package's Lifecycle is one. Its methods
// must not block. The manager does not arm the missing timer of a
// controlled slave: a stopped latent slave is not missing, and the
// controller reports instances that never attach.
type Controller interface {
	// Controls reports whether the named slave is the controller's. The
	// manager calls it with its lock held: it must be a plain lookup that
	// takes no lock a caller of the manager may hold.
	Controls(name string) bool
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
	// The manager calls it without its lock.
	Want(name string) bool
}

// SetController hands the slaves c controls to c. Call it once, before
// slaves attach.
func (m *Manager) SetController(c Controller) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctl = c
	for _, e := range m.slaves {
		if e.att == nil && c.Controls(e.cfg.name) {
			m.disarmMissing(e)
		}
	}
}

// controls reports whether the named slave has a Controller; m.mu is held.
func (m *Manager) controls(name string) bool { return m.ctl != nil && m.ctl.Controls(name) }

// controller returns the Controller of the named slave, if any.
func (m *Manager) controller(name string) Controller {
	m.mu.Lock()
	c := m.ctl
	m.mu.Unlock()
	if c != nil && c.Controls(name) {
		return c
	}
	return nil
}

// want tells the Controller, if any, that an Acquire waits for these
// detached slaves, in order, until one of them starts.
func (m *Manager) want(names ...string) {
	m.mu.Lock()
	c := m.ctl
	m.mu.Unlock()
	if c == nil {
		return
	}
	for _, name := range names {
		if c.Controls(name) && c.Want(name) {
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

// Drain stops the named slave from taking new builds, if it has none
// running; it fails with ErrBusy otherwise. A Controller drains a slave
// before it stops the slave's machine, so that no build can start in
// between, and also when a start failed, so that an instance that still
// attaches late takes no build. The drain lasts, across detaches and
// attaches, until Undrain.
func (m *Manager) Drain(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(name)
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
func (m *Manager) Undrain(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	e.draining = false
	m.serveWaiters(e)
	return nil
}

// Waiting counts the Acquires that wait for the named slave (alone or
// among others).
func (m *Manager) Waiting(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.slaves[name]; e != nil {
		return e.waiters.Len()
	}
	return 0
}

// FailWaiters fails, with err, every Acquire that waits for the named
// slave alone, and returns how many it failed; Acquires that also wait
// for other slaves go on waiting for those. A Controller calls it when a
// start failed, so that callers learn why instead of waiting on.
func (m *Manager) FailWaiters(name string, err error) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.slaves[name]
	if e == nil {
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
func (m *Manager) Disconnect(name string, reason error) error {
	m.mu.Lock()
	e, err := m.lookup(name)
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
