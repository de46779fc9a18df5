package slave

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/buildslave/buildslave/notify"
)

// Gate decides, for several masters sharing one fleet, which of them holds
// a slave name: the manager claims the name after a login's authentication
// and before the slave is attached, and releases it once the slave
// detached. cluster.Member is one, on etcd. With no Gate (one master) a
// name is the manager's alone, as before.
type Gate interface {
	// Claim makes this master the name's owner. When another live master
	// holds it, Claim asks that master to ping its connection, as the
	// manager pings its own on a duplicate: an error wrapping ErrDuplicate
	// if the connection answered; ownership moves here if it did not, or
	// if that master did not answer in time. Any other error means the
	// Gate cannot record an owner now (its store unreachable, its session
	// lost): the manager then refuses names it does not hold.
	Claim(ctx context.Context, name string) error
	// Release gives the name up after the slave detached, if this master
	// still holds it. A non-nil missing is the notice the slave is owed if
	// it attaches to no master by missing.Due: the Gate keeps it so that
	// exactly one master sends it (see SendMissing).
	Release(ctx context.Context, name string, missing *MissingNotice) error
	// SendMissing sends, through send, the missing notice of a slave
	// whose missing_timeout ran out here, unless it attached to some master
	// since or another master sent it: the notice goes out once per loss
	// cluster-wide. missing is the notice as this master knows it; the
	// Gate sends the one its Release recorded if it has one, else (a slave
	// that never attached here) missing if no master holds the slave and
	// none recorded a loss of it. It returns nil, without calling send,
	// when there is nothing to send from here.
	SendMissing(ctx context.Context, missing MissingNotice, send func(ctx context.Context) error) error
	// Hold has the Gate ask h about the names this master holds: to ping a
	// connection when another master asks, and to drop one whose name
	// another master took. NewManager calls it once.
	Hold(h Holder)
}

// Holder is what a Gate asks of the manager that holds slave names;
// Manager is one.
type Holder interface {
	// PingAttached pings the connection attached under name because of
	// by (another master's attach), bounded by ctx and the manager's
	// DuplicatePingTimeout. Nil means it answered. Otherwise it has been
	// dropped (and its name released), or the error wraps ErrNotAttached.
	PingAttached(ctx context.Context, name, by string) error
	// DropAttached drops the connection attached under name, whose name
	// another master took; the name is not released (it is no longer
	// this master's) and no missing notice is recorded.
	DropAttached(name string, reason error)
}

var _ Holder = (*Manager)(nil)

// MissingNotice is the notice a detached slave is owed if it attaches to
// no master within its missing_timeout.
type MissingNotice struct {
	notify.Missing           // Detected is set when the notice is sent
	Due            time.Time // missing_timeout after the detach
}

// ErrUnclaimed refuses a login whose name the Gate could not record as
// this master's (its store unreachable or its session lost); the slaves
// already attached stay.
var ErrUnclaimed = errors.New("cannot record this master as the slave's owner; serving only the slaves it holds")

// gateTimeout bounds a Release, and a Claim with twice the
// DuplicatePingTimeout on top (the owner's ping and the answer): a Gate
// whose store does not answer is down, not waited for.
const gateTimeout = 10 * time.Second

// claim asks the Gate for name before c attaches; e.attachLock is held.
// A failure to record an owner is logged once per change of the Gate's
// state, not once per refused login.
func (m *Manager) claim(ctx context.Context, name string, c Conn) error {
	cctx, cancel := context.WithTimeout(ctx, gateTimeout+2*m.cfg.DuplicatePingTimeout)
	err := m.cfg.Gate.Claim(cctx, name)
	cancel()
	down := err != nil && !errors.Is(err, ErrDuplicate) && ctx.Err() == nil && c.Context().Err() == nil
	m.mu.Lock()
	changed := down != m.gateDown
	m.gateDown = down
	m.mu.Unlock()
	switch {
	case changed && down:
		m.log.Error("slave gate unavailable: refusing slave names this master does not hold, keeping the attached ones", "reason", err.Error())
	case changed:
		m.log.Info("slave gate available again: taking new slave names")
	}
	switch {
	case err == nil:
		return nil
	case down:
		return m.refused(c.RemoteAddr(), name, fmt.Errorf("%w: %w", ErrUnclaimed, err))
	}
	return m.refuse(c.RemoteAddr(), name, err)
}

// release gives name back to the Gate, with the missing notice owed, if
// any; e.attachLock is held.
func (m *Manager) release(name string, missing *MissingNotice) {
	ctx, cancel := context.WithTimeout(context.Background(), gateTimeout)
	defer cancel()
	if err := m.cfg.Gate.Release(ctx, name, missing); err != nil {
		m.log.Warn("slave gate: releasing a detached slave's name failed", "slave", name, "reason", err.Error())
	}
}

// released releases a's name once its attach lock is free, unless the
// slave attached again meanwhile; m.mu is held and a just detached.
func (m *Manager) released(a *attachment) {
	if m.cfg.Gate == nil || a.taken {
		return
	}
	e := a.entry
	var missing *MissingNotice
	if !e.controlled && !e.removed {
		missing = &MissingNotice{Missing: e.report(), Due: e.since.Add(e.cfg.missingTimeout)}
	}
	m.wg.Go(func() {
		e.attachLock <- struct{}{}
		defer func() { <-e.attachLock }()
		m.mu.Lock()
		again := e.att != nil
		m.mu.Unlock()
		if !again {
			m.release(e.name, missing)
		}
	})
}

// PingAttached pings the connection attached under name for another
// master's attach of the name: nil if it answered; otherwise it has been
// dropped, as a duplicate's dead connection is.
func (m *Manager) PingAttached(ctx context.Context, name, by string) error {
	m.mu.Lock()
	e := m.slaves[name]
	m.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%w: %q", ErrNotAttached, name)
	}
	select {
	case e.attachLock <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-e.attachLock }()
	m.mu.Lock()
	a := e.att
	m.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w: %q", ErrNotAttached, name)
	}
	alive, err := m.ping(ctx, a, by)
	switch {
	case alive:
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: %s did not answer a ping", ErrSlaveLost, name)
}

// DropAttached drops the connection attached under name because another
// master took the name.
func (m *Manager) DropAttached(name string, reason error) {
	m.mu.Lock()
	e := m.slaves[name]
	var a *attachment
	if e != nil {
		a = e.att
	}
	if a != nil {
		a.taken = true
	}
	m.mu.Unlock()
	if a == nil {
		return
	}
	m.log.Warn("another master took the slave's name; dropping its connection here", "slave", name, "remote", a.conn.RemoteAddr(), "reason", reason.Error())
	a.lose(reason)
	m.detach(a, reason)
}
