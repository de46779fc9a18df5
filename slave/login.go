package slave

import (
	"context"
	"fmt"
	"time"

	"github.com/buildslave/buildslave/internal/guess"
)

// Authenticate checks a login with a plain password: Verify with
// Password(password).
func (m *Manager) Authenticate(name, password, remoteAddr string) error {
	return m.Verify(name, Password(password), remoteAddr)
}

// Verify checks a login. An unknown name or a proof that does not match
// is refused with an error wrapping ErrUnknownSlave or ErrBadPassword (or
// the Controller's reason), never naming the password. The check takes
// the same time whatever the proof.
//
// Guessing costs: a remote address whose logins were refused too often
// lately (Config.RefusalBurst) is refused at once, without a check, with
// ErrTooManyRefusals. Logins from an address with no recent refusal are
// all checked, however many arrive at once (slaves behind one NAT); once
// it has been refused, each concurrent check holds one refusal of its
// budget, so that concurrent guesses cannot overdraw it. The first
// refusal from an address is logged at once with its reason; the ones
// that follow it within a minute are counted and logged as one line at
// the minute's end.
func (m *Manager) Verify(name string, proof Proof, remoteAddr string) error {
	key := guess.Key(remoteAddr)
	t := m.refusals.Take(key)
	if !t.OK {
		return m.refuseLogin(remoteAddr, key, name, ErrTooManyRefusals, false, false, t.Blocks)
	}
	if err := m.check(name, proof); err != nil {
		return m.refuseLogin(remoteAddr, key, name, err, true, !t.Reserved, true)
	}
	if t.Reserved {
		m.refusals.Refund(key)
	}
	return nil
}

// Login is Verify for a connection that goes on to attach. When the login
// passes, it also holds the slave's name for this connection until ctx
// is done, so that only one connection per name is past authentication
// and not yet attached at a time: another Login under the name meanwhile
// is refused, once its proof is checked, with an error wrapping
// ErrAttaching. A transport passes a context that ends when the
// connection's attach is over: when Attach returned, or when the
// connection ended first. The hold then ends by itself; nothing else
// releases it. A name that is attached already is not held: Attach
// resolves that duplicate by pinging the old connection.
func (m *Manager) Login(ctx context.Context, name string, proof Proof, remoteAddr string) error {
	if err := m.Verify(name, proof, remoteAddr); err != nil {
		return err
	}
	m.mu.Lock()
	held := m.logins[name]
	if m.closing || held != nil {
		m.mu.Unlock()
		reason := ErrClosed
		if held != nil {
			reason = fmt.Errorf("%w (from %s)", ErrAttaching, held.remote)
		}
		return m.refuseLogin(remoteAddr, guess.Key(remoteAddr), name, reason, true, false, true)
	}
	l := &login{remote: remoteAddr}
	if m.logins == nil {
		m.logins = make(map[string]*login)
	}
	m.logins[name] = l
	m.wg.Add(1)
	l.stop = context.AfterFunc(ctx, func() {
		defer m.wg.Done()
		m.mu.Lock()
		if m.logins[name] == l {
			delete(m.logins, name)
		}
		m.mu.Unlock()
	})
	m.mu.Unlock()
	return nil
}

// login is a name Login holds for one connection until its attach is over.
type login struct {
	remote string
	stop   func() bool // unregisters the watcher of the connection's context
}

// endLogins ends every hold of Login, for Close.
func (m *Manager) endLogins() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, l := range m.logins {
		if l.stop() {
			m.wg.Done() // the watcher will never run
		}
		delete(m.logins, name)
	}
}

// check checks a login's name and proof, and returns why it is refused.
func (m *Manager) check(name string, proof Proof) error {
	m.mu.Lock()
	var cfg *Slave
	var ctl Controller
	if e := m.slaves[name]; e != nil && !e.removed {
		cfg = e.cfg
		if e.controlled {
			ctl = m.ctl
		}
	}
	m.mu.Unlock()
	if cfg == nil {
		proof.Proves(name) // spend the same time as a real check
		return ErrUnknownSlave
	}
	if ctl != nil {
		return ctl.Admit(name, proof)
	}
	if !cfg.Accepts(proof) {
		return ErrBadPassword
	}
	return nil
}

// refuseLogin counts a refused login from key, logs it if it is the first
// from there in a while, publishes it if publish, and returns the error.
// checked says whether the login's proof was checked, spend whether the
// refusal is still to be taken from the address's budget.
func (m *Manager) refuseLogin(remoteAddr, key, name string, reason error, checked, spend, publish bool) error {
	if len(name) > maxLoggedName {
		name = name[:maxLoggedName] + "..."
	}
	if m.refusals.Note(key, checked, spend) {
		m.log.Warn("slave connection refused", "remote", remoteAddr, "slave", name, "reason", reason.Error())
	}
	if publish {
		m.mu.Lock()
		m.emit(Event{Kind: Refused, Slave: name, Time: time.Now(), Err: reason})
		m.mu.Unlock()
	}
	return fmt.Errorf("slave %q from %s refused: %w", name, remoteAddr, reason)
}
