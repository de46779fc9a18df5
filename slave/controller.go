package slave

import (
	"errors"
	"fmt"
)

// Controller takes part in the life of slaves whose machines it starts
// and stops on demand: the latent package's Lifecycle is one. The manager
// calls it without holding its own lock; its methods must not block.
type Controller interface {
	// Controls reports whether the named slave is the controller's.
	Controls(name string) bool
	// Admit decides a login under a controlled name, in place of the
	// manager's password check: it sees the password the connection
	// offered, and an error refuses the login (the manager logs the error
	// as the reason, never the password).
	Admit(name, password string) error
	// Want tells that an Acquire waits for the named controlled slave
	// while it is not attached.
	Want(name string)
}

// SetController hands the slaves c controls to c. Call it once, before
// slaves attach.
func (m *Manager) SetController(c Controller) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ctl = c
}

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

// want tells the Controller, if any, that Acquires wait for these
// detached slaves.
func (m *Manager) want(names ...string) {
	m.mu.Lock()
	c := m.ctl
	m.mu.Unlock()
	if c == nil {
		return
	}
	for _, name := range names {
		if c.Controls(name) {
			c.Want(name)
		}
	}
}

// CheckPassword reports whether password is the slave's, in constant time.
func (s *Slave) CheckPassword(password string) bool { return passwordsEqual(password, s.password) }

// ErrBusy: Drain found builds running on the slave.
var ErrBusy = errors.New("slave has builds running")

// Drain stops the named attached slave from taking new builds, if it has
// none running; it fails with ErrBusy otherwise. A Controller drains a
// slave before it stops the slave's machine, so that no build can start
// in between. The drain ends when the slave detaches, or with Undrain.
func (m *Manager) Drain(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(name)
	switch {
	case err != nil:
		return err
	case e.att == nil:
		return fmt.Errorf("%w: %q", ErrNotAttached, name)
	case len(e.builds) > 0:
		return fmt.Errorf("%w: %q has %d", ErrBusy, name, len(e.builds))
	}
	e.draining = true
	return nil
}

// Undrain lets a drained slave take builds again.
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
