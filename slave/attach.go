package slave

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/buildslave/buildslave/keepalive"
)

// maxLoggedName bounds how much of an unknown, peer-chosen name is logged.
const maxLoggedName = 64

// attachment is one registered connection of one slave. The manager
// removes a registration only through the attachment that made it, so a
// late cleanup of a replaced connection can never unregister its successor
// (Buildbot issue 4678).
type attachment struct {
	m         *Manager
	entry     *entry
	conn      Conn
	keepalive *keepalive.Loop
	stopWatch func() bool // unregisters the watcher of conn.Context()
	lost      error       // why the manager dropped it, if it did; under m.mu
	taken     bool        // another master took its name (Gate); under m.mu
}

// lose records why the connection is being dropped, then closes it; the
// watcher of its context detaches it.
func (a *attachment) lose(reason error) {
	a.m.mu.Lock()
	if a.lost == nil {
		a.lost = reason
	}
	a.m.mu.Unlock()
	a.conn.Close()
}

// PasswordsEqual compares two passwords in constant time, whatever their
// lengths: the latent lifecycle uses it for per-start passwords too.
func PasswordsEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// Proof is what a connecting slave shows for its password: the password
// itself (Password, from HTTP Basic auth) or a transport's challenge
// response, such as Perspective Broker's MD5 one.
type Proof interface {
	// Proves reports, in constant time, whether the proof was made with
	// password.
	Proves(password string) bool
}

// Password is a Proof made of the password itself.
type Password string

// Proves compares the passwords in constant time.
func (p Password) Proves(password string) bool { return PasswordsEqual(string(p), password) }

// refuse logs one line for a refused attach, publishes it and returns the
// error.
func (m *Manager) refuse(remoteAddr, name string, reason error) error {
	if len(name) > maxLoggedName {
		name = name[:maxLoggedName] + "..."
	}
	m.log.Warn("slave connection refused", "remote", remoteAddr, "slave", name, "reason", reason.Error())
	return m.refused(remoteAddr, name, reason)
}

// refused publishes a refused attach, without a log line, and returns the
// error.
func (m *Manager) refused(remoteAddr, name string, reason error) error {
	if len(name) > maxLoggedName {
		name = name[:maxLoggedName] + "..."
	}
	m.mu.Lock()
	m.emit(Event{Kind: Refused, Slave: name, Time: time.Now(), Err: reason})
	m.mu.Unlock()
	return fmt.Errorf("slave %q from %s refused: %w", name, remoteAddr, reason)
}

// Attach registers an authenticated connection as the named slave. If a
// connection is already attached under that name, the old one is pinged
// (bounded by Config.DuplicatePingTimeout): if it answers, c is refused with
// ErrDuplicate; if not, it is closed and cleaned up and c takes its place.
// With a Config.Gate, the name is then claimed from the Gate, which applies
// the same rule across masters (see Gate.Claim). Attaches of different
// slaves never wait for each other.
//
// Once Attach returns nil the manager owns the registration: it runs the
// slave's keepalives and detaches it when c.Context() is done. On error
// the caller closes c.
func (m *Manager) Attach(ctx context.Context, name string, c Conn) error {
	m.mu.Lock()
	e := m.slaves[name]
	known := e != nil && !e.removed
	closing := m.closing
	m.mu.Unlock()
	switch {
	case !known:
		return m.refuse(c.RemoteAddr(), name, ErrUnknownSlave)
	case closing:
		return m.refuse(c.RemoteAddr(), name, ErrClosed)
	}

	select {
	case e.attachLock <- struct{}{}:
	case <-ctx.Done():
		return m.refuse(c.RemoteAddr(), name, fmt.Errorf("gave up waiting for another attach of the same name: %w", context.Cause(ctx)))
	case <-c.Context().Done():
		return fmt.Errorf("slave %q: connection lost while attaching: %w", name, context.Cause(c.Context()))
	}
	defer func() { <-e.attachLock }()

	m.mu.Lock()
	old := e.att
	m.mu.Unlock()
	if old != nil {
		if err := m.pingOld(ctx, old, c); err != nil {
			return err
		}
	}
	if m.cfg.Gate != nil {
		if err := m.claim(ctx, name, c); err != nil {
			return err
		}
	}

	m.mu.Lock()
	var refusal, lost error
	switch {
	case m.slaves[name] != e || e.removed:
		refusal = ErrUnknownSlave
	case m.closing:
		refusal = ErrClosed
	case c.Context().Err() != nil:
		lost = fmt.Errorf("slave %q: connection lost while attaching: %w", name, context.Cause(c.Context()))
	}
	if refusal != nil || lost != nil {
		m.mu.Unlock()
		if m.cfg.Gate != nil {
			m.release(name, nil)
		}
		if lost != nil {
			return lost
		}
		return m.refuse(c.RemoteAddr(), name, refusal)
	}
	a := &attachment{m: m, entry: e, conn: c}
	now := time.Now()
	e.att = a
	e.since, e.lastSeen = now, now
	e.info = c.Info() // immutable, as Conn promises: State hands out copies
	e.missing = false
	e.shuttingDown = false
	m.disarmMissing(e)
	a.keepalive = m.startKeepalive(a)
	if r, ok := c.(AliveReporter); ok {
		r.OnAlive(m.seen(a))
	}
	m.wg.Add(1)
	a.stopWatch = context.AfterFunc(c.Context(), func() {
		defer m.wg.Done()
		m.detach(a, context.Cause(c.Context()))
	})
	m.emit(Event{Kind: Attached, Slave: name, Time: now})
	m.serveWaiters(e)
	m.mu.Unlock()
	m.log.Info("slave attached", "slave", name, "remote", c.RemoteAddr())
	return nil
}

// pingOld decides a duplicate: nil means the old connection is dead and
// has been cleaned up, so c may take its place.
func (m *Manager) pingOld(ctx context.Context, old *attachment, c Conn) error {
	name := old.entry.name
	alive, err := m.ping(ctx, old, c.RemoteAddr())
	switch {
	case alive:
		return m.refuse(c.RemoteAddr(), name, fmt.Errorf("%w (attached from %s)", ErrDuplicate, old.conn.RemoteAddr()))
	case err != nil:
		return m.refuse(c.RemoteAddr(), name, fmt.Errorf("gave up while pinging the attached connection: %w", err))
	}
	return nil
}

// ping pings old's connection because a new one from by wants its name,
// bounded by ctx and Config.DuplicatePingTimeout. alive means it answered;
// otherwise, unless ctx ended first (err), old is dropped and cleaned up.
func (m *Manager) ping(ctx context.Context, old *attachment, by string) (alive bool, err error) {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.DuplicatePingTimeout)
	err = old.conn.Print(pctx, "master got a second connection under this slave's name; checking this one is alive")
	cancel()
	if err == nil {
		return true, nil
	}
	if ctx.Err() != nil {
		return false, context.Cause(ctx)
	}
	m.log.Warn("attached slave did not answer a ping; replacing its connection",
		"slave", old.entry.name, "old_remote", old.conn.RemoteAddr(), "new_remote", by, "reason", err.Error())
	reason := fmt.Errorf("replaced by a new connection from %s after the old one did not answer a ping: %w", by, err)
	old.lose(reason)
	m.detach(old, reason)
	return false, nil
}

// seen returns what records a sign of life of a: a keepalive's reply, or
// a keepalive the slave sent of its own.
func (m *Manager) seen(a *attachment) func() {
	return func() {
		m.mu.Lock()
		if a.entry.att == a {
			a.entry.lastSeen = time.Now()
		}
		m.mu.Unlock()
	}
}

// startKeepalive starts the keepalive loop of a new attachment; m.mu is held.
func (m *Manager) startKeepalive(a *attachment) *keepalive.Loop {
	e := a.entry
	return keepalive.Start(a.conn, e.cfg.keepaliveInterval, m.cfg.KeepaliveTimeout, m.seen(a),
		func(err error) {
			m.log.Warn("slave keepalive failed; dropping the connection", "slave", e.name, "remote", a.conn.RemoteAddr(), "reason", err.Error())
			a.lose(err)
		})
}

// detach removes a's registration, if it is still the current one: running
// builds learn at once through their contexts, their slots free, and the
// missing timer starts. It is idempotent.
func (m *Manager) detach(a *attachment, cause error) {
	m.mu.Lock()
	e := a.entry
	if e.att != a {
		m.mu.Unlock()
		return
	}
	if a.lost != nil {
		cause = a.lost
	}
	if cause == nil {
		cause = errors.New("connection closed")
	}
	name := e.cfg.name
	now := time.Now()
	e.att = nil
	e.since, e.lastSeen = now, now
	e.shuttingDown = false
	lost := fmt.Errorf("%w: %s: %w", ErrSlaveLost, name, cause)
	for b := range e.builds {
		m.endBuild(b, lost)
	}
	switch {
	case e.removed:
		delete(m.slaves, name) // its waiters were failed when it was removed
	case !m.closed:
		m.armMissing(e)
	}
	m.released(a)
	m.emit(Event{Kind: Detached, Slave: name, Time: now, Err: cause})
	waited := e.controlled && e.waiters.Len() > 0
	m.mu.Unlock()
	if waited {
		m.want(name)
	}

	if a.stopWatch() {
		m.wg.Done() // the watcher will never run
	}
	a.keepalive.Stop()
	a.conn.Close()
	m.log.Info("slave detached", "slave", name, "remote", a.conn.RemoteAddr(), "reason", cause.Error())
}
