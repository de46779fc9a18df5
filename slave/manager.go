package slave

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/buildslave/buildslave/internal/guess"
	"github.com/buildslave/buildslave/keepalive"
	"github.com/buildslave/buildslave/notify"
)

// DefaultDuplicatePingTimeout bounds how long the manager waits for an
// attached connection to answer when a second one arrives under its name.
const DefaultDuplicatePingTimeout = 10 * time.Second

// Config holds a Manager's settings. The zero value means defaults.
type Config struct {
	// Logger receives one line per attach, detach and missing slave, and
	// about refused logins: the first from a remote address at once, with
	// its reason, and the ones that follow it within a minute as one line
	// at the minute's end. Nil means slog.Default().
	Logger *slog.Logger
	// Notifier is told when a slave with notify_on_missing goes missing.
	// Nil means notify.Default(): missing-slave mail still goes out, as
	// Buildbot 0.8.6's manual promises, through a relay on localhost. A failed notice is
	// retried as a zero notify.Retrying does; pass a *notify.Retrying to
	// choose other retries.
	Notifier notify.Notifier
	// DuplicatePingTimeout bounds the ping of an attached connection when
	// another arrives under the same name. Zero means 10 s.
	DuplicatePingTimeout time.Duration
	// KeepaliveTimeout bounds the wait for a keepalive's reply. Zero means
	// keepalive.DefaultTimeout of each slave's interval.
	KeepaliveTimeout time.Duration

	// RefusalBurst is how many refused logins one remote address (an IP
	// address; for IPv6 its /64) may make in a row. Then it earns one
	// more per RefusalInterval, and while it has none left its logins are
	// refused at once, without a check, with ErrTooManyRefusals: the
	// first time for RefusalInterval, then for twice as long each time it
	// runs out again, up to RefusalBackoff, until it has its whole burst
	// back. DefaultRefusalBurst if 0; negative turns the limit off (for a
	// master whose slaves all come through one proxy).
	RefusalBurst int
	// RefusalInterval is how often an address earns back a refused login,
	// and its first back-off. DefaultRefusalInterval if 0.
	RefusalInterval time.Duration
	// RefusalBackoff caps the back-off. DefaultRefusalBackoff if 0.
	RefusalBackoff time.Duration
	// RefusalAddresses caps how many remote addresses the manager keeps a
	// count of; beyond it, the least recently seen one is forgotten.
	// DefaultRefusalAddresses if 0.
	RefusalAddresses int

	// Gate, if set, decides with the other masters sharing the fleet
	// which one holds each slave name (cluster.Member is one): a login
	// attaches only once the Gate made this master the name's owner, and
	// a name another live master holds is resolved by the duplicate rule
	// across masters. While the Gate cannot record owners, logins under
	// names this master does not hold are refused with ErrUnclaimed and
	// the attached slaves stay. A slave's missing notice goes out once
	// per loss cluster-wide (Gate.SendMissing): not for a slave attached
	// to another master. Nil: one master, as before.
	Gate Gate
}

// Manager owns the known slaves and their attached connections: it
// authenticates logins, resolves duplicate names, runs keepalives, hands
// out build slots, notices missing slaves and publishes state and events.
// All its methods are safe for concurrent use.
//
// Each slave's state lives in one struct guarded by the manager's mutex;
// nothing waits while holding it, so one slow or silent slave never delays
// another's attach.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	notifier notify.Notifier // cfg.Notifier, with retries
	refusals *guess.Table

	ctx    context.Context // cancelled by Close: ends pending notifications
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection watchers, notifications, shutdown requests

	mu      sync.Mutex
	slaves  map[string]*entry
	subs    map[*subscriber]struct{}
	logins  map[string]*login // names held by Login until their attach is over
	ctl     Controller
	running int           // builds holding a slot, across all slaves
	drained chan struct{} // closed when running drops to zero during Shutdown
	closing bool          // Shutdown or Close was called: no new attaches or builds
	closed  bool
	// gateDown: the Gate's last Claim failed to record an owner (logged
	// once per change).
	gateDown bool
}

// entry is one configured slave and its current attachment. Its name
// never changes, so it may be read without the lock; every other field,
// cfg included, is guarded by m.mu: Reconfigure replaces cfg (a *Slave is
// immutable, so a pointer taken under the lock stays valid after it).
type entry struct {
	name       string
	cfg        *Slave
	att        *attachment   // nil while detached
	attachLock chan struct{} // serializes attaches under this one name

	since        time.Time // attached since, or detached since; zero if never attached
	lastSeen     time.Time
	info         Info // as reported at the last attach
	missing      bool
	missingTimer *time.Timer
	missingGen   int // increases whenever the missing timer is (re)armed or cancelled

	paused       bool
	shuttingDown bool // graceful shutdown asked: no new builds, shut down when idle
	draining     bool // a Controller is about to stop its machine: no new builds
	removed      bool // gone from the config: dropped once detached
	controlled   bool // the Controller's: only Control adds, changes or removes it

	builds  map[*Build]struct{}
	waiters *list.List // of *waiter, oldest first
}

// NewManager builds a Manager for the given slaves. Duplicate names are
// refused with an error naming the field.
func NewManager(cfg Config, slaves ...*Slave) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DuplicatePingTimeout <= 0 {
		cfg.DuplicatePingTimeout = DefaultDuplicatePingTimeout
	}
	if cfg.Notifier == nil {
		cfg.Notifier = notify.Default()
	}
	notifier, ok := cfg.Notifier.(*notify.Retrying)
	if !ok {
		notifier = &notify.Retrying{Notifier: cfg.Notifier, Logger: cfg.Logger}
	}
	m := &Manager{
		cfg:      cfg,
		log:      cfg.Logger,
		notifier: notifier,
		slaves:   make(map[string]*entry),
		subs:     make(map[*subscriber]struct{}),
		refusals: newRefusals(cfg, cfg.Logger),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if err := m.Reconfigure(slaves...); err != nil {
		m.cancel()
		return nil, err
	}
	if cfg.Gate != nil {
		cfg.Gate.Hold(m)
	}
	return m, nil
}

func checkUnique(slaves []*Slave) error {
	seen := make(map[string]bool, len(slaves))
	var errs []error
	for _, s := range slaves {
		if s == nil {
			errs = append(errs, &ConfigError{Field: "slaves", Reason: "nil *Slave (build slaves with slave.New)"})
			continue
		}
		if seen[s.name] {
			errs = append(errs, &ConfigError{Slave: s.name, Field: "name", Reason: "duplicate slave name"})
		}
		seen[s.name] = true
	}
	return errors.Join(errs...)
}

// newEntry returns the entry of a slave the manager did not know.
func newEntry(s *Slave) *entry {
	return &entry{name: s.name, cfg: s, attachLock: make(chan struct{}, 1), builds: make(map[*Build]struct{}), waiters: list.New()}
}

// Reconfigure replaces the set of known slaves while others stay attached,
// like Buildbot's reconfig: new slaves are added, slaves whose settings
// changed keep their connection and builds and take the new settings at
// once, and slaves no longer listed take no new builds and are
// disconnected once their running builds end. On error nothing changes.
//
// The slaves of a Controller (latent slaves) are not Reconfigure's: it
// leaves them as they are, and refuses a slave under one of their names.
// Change them through their Controller (latent.Lifecycle.Reconfigure).
func (m *Manager) Reconfigure(slaves ...*Slave) error {
	if err := checkUnique(slaves); err != nil {
		return err
	}
	var stop []*keepalive.Loop // replaced: their interval changed
	var drop []*attachment     // removed and idle: disconnect now

	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return ErrClosed
	}
	var errs []error
	for _, s := range slaves {
		if e := m.slaves[s.name]; e != nil && e.controlled && !e.removed {
			errs = append(errs, &ConfigError{Slave: s.name, Field: "name", Reason: "is a latent slave: its Controller configures it"})
		}
	}
	if err := errors.Join(errs...); err != nil {
		m.mu.Unlock()
		return err
	}
	keep := make(map[string]bool, len(slaves))
	for _, s := range slaves {
		keep[s.name] = true
		e := m.slaves[s.name]
		if e == nil {
			e = newEntry(s)
			m.slaves[s.name] = e
			m.armMissing(e)
			continue
		}
		e.controlled = false // a controlled slave removed, still attached
		old := e.cfg
		e.cfg = s
		e.removed = false
		if e.att == nil {
			if old.missingTimeout != s.missingTimeout && !e.missing {
				m.armMissing(e)
			}
			continue
		}
		if old.keepaliveInterval != s.keepaliveInterval {
			stop = append(stop, e.att.keepalive)
			e.att.keepalive = m.startKeepalive(e.att)
		}
		m.serveWaiters(e)
	}
	for name, e := range m.slaves {
		if keep[name] || e.controlled || e.removed {
			continue
		}
		if a := m.remove(e); a != nil {
			drop = append(drop, a)
		}
	}
	m.mu.Unlock()

	for _, l := range stop { // outside the lock: Stop waits for callbacks that take it
		l.Stop()
	}
	for _, a := range drop {
		m.log.Info("slave removed from the configuration; disconnecting", "slave", a.entry.name)
		a.lose(errRemoved)
	}
	return nil
}

// remove forgets e: its waiters fail, it is dropped now if detached, else
// once it detaches. It returns e's attachment if it is to be disconnected
// now, having no build. m.mu is held.
func (m *Manager) remove(e *entry) *attachment {
	e.removed = true
	m.failWaiters(e, fmt.Errorf("%w: %s was removed from the configuration", ErrUnknownSlave, e.name))
	switch {
	case e.att == nil:
		m.disarmMissing(e)
		delete(m.slaves, e.name)
	case len(e.builds) == 0:
		return e.att
	}
	return nil
}

// Slaves returns the configured slaves, latent ones included, sorted by
// name.
func (m *Manager) Slaves() []*Slave {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Slave, 0, len(m.slaves))
	for _, e := range m.slaves {
		if !e.removed {
			out = append(out, e.cfg)
		}
	}
	slices.SortFunc(out, func(a, b *Slave) int { return strings.Compare(a.name, b.name) })
	return out
}

// Shutdown stops taking attaches and builds, waits for running builds to
// end, then disconnects every slave and waits for pending notifications.
// At ctx's deadline it returns ctx.Err(); call Close then to abort.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	if m.drained == nil {
		m.drained = make(chan struct{})
		if m.running == 0 {
			close(m.drained)
		}
	}
	drained := m.drained
	m.mu.Unlock()
	select {
	case <-drained:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.disconnectAll(ErrClosed)
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		m.Close()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close aborts: running builds are cancelled, every connection is closed,
// timers stop and pending notifications are abandoned. It returns once
// every goroutine the manager started has ended.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closing = true
	m.closed = true
	for _, e := range m.slaves {
		m.disarmMissing(e)
		m.failWaiters(e, ErrClosed)
	}
	m.mu.Unlock()
	m.cancel()
	m.disconnectAll(ErrClosed)
	m.refusals.Close()
	m.endLogins()
	m.wg.Wait()
	m.mu.Lock()
	for s := range m.subs { // after the last detach, so subscribers see it
		s.end()
		delete(m.subs, s)
	}
	m.mu.Unlock()
	return nil
}

func (m *Manager) disconnectAll(reason error) {
	m.mu.Lock()
	var atts []*attachment
	for _, e := range m.slaves {
		if e.att != nil {
			atts = append(atts, e.att)
		}
	}
	m.mu.Unlock()
	for _, a := range atts {
		a.lose(reason)
	}
	for _, a := range atts {
		m.detach(a, reason)
	}
}
