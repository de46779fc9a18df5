package latent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
)

// Defaults for zero fields of Config.
const (
	// DefaultReapInterval is how often the reaper looks for instances
	// left behind.
	DefaultReapInterval = 10 * time.Minute
	// DefaultCheckInterval is how often a Checker is asked whether a
	// starting instance is still alive.
	DefaultCheckInterval = 10 * time.Second
	// DefaultStopTimeout bounds one Stop or List call of a driver.
	DefaultStopTimeout = 10 * time.Minute
)

// The quarantine after failed substantiations, as in Buildbot: 10 s after
// the first, doubling with each further failure up to an hour. Failed
// stops are retried on the same schedule.
const (
	QuarantineMin = 10 * time.Second
	QuarantineMax = time.Hour
)

// Errors of the Lifecycle, to be tested with errors.Is.
var (
	// ErrNotSubstantiating refuses a login under a latent slave's name
	// while no substantiation waits for its attach.
	ErrNotSubstantiating = errors.New("latent slave is not substantiating")
	// ErrAttached refuses a second login under a latent slave's name while
	// its instance is attached.
	ErrAttached = errors.New("latent slave is already attached")
	// ErrMissing: the instance did not attach within missing_timeout.
	ErrMissing = errors.New("instance did not attach within missing_timeout")
	// ErrDied: the driver's Checker reported the instance dead before it
	// attached; the error also wraps the driver's reason.
	ErrDied = errors.New("instance died before attaching")
	// ErrQuarantined: an earlier substantiation failed and the back-off
	// has not ended; the error also wraps that failure.
	ErrQuarantined = errors.New("latent slave is quarantined after a failed substantiation")
	// ErrClosed: the Lifecycle is shutting down or closed.
	ErrClosed = errors.New("latent lifecycle shut down")
)

// Config holds a Lifecycle's settings. MasterID is required; zero values
// of the other fields mean defaults.
type Config struct {
	// MasterID names this master in the tags of every instance it starts.
	// The reaper stops instances tagged with it that the Lifecycle does not
	// track, so it must be stable across restarts and differ between
	// masters sharing a cloud account or host. There is no default: a
	// guessed one could reap another master's instances.
	MasterID string
	// Logger receives one line per state change, with the slave's name,
	// the instance id and the reason. Nil means slog.Default().
	Logger *slog.Logger
	// Notifier is told when an instance never attached (the slave's
	// notify_on_missing). Nil means notify.Default(); failed notices are
	// retried as a zero notify.Retrying does; pass a *notify.Retrying to
	// choose other retries.
	Notifier notify.Notifier
	// MaxStarting caps the instances between Start and attach at once;
	// 0 means no cap. Substantiations beyond it wait their turn.
	MaxStarting int
	// MaxRunning caps the instances in existence at once, from Start
	// until stopped; 0 means no cap.
	MaxRunning int
	// ReapInterval is how often the reaper runs after its first run in
	// New; 0 means DefaultReapInterval, negative means only in New.
	ReapInterval time.Duration
	// CheckInterval is how often a driver implementing Checker is asked
	// about an instance that has not attached yet; 0 means
	// DefaultCheckInterval.
	CheckInterval time.Duration
	// StopTimeout bounds each Stop and List call of a driver; 0 means
	// DefaultStopTimeout.
	StopTimeout time.Duration
	// Observe, if set, is told of every state change and every reaped
	// instance, for metrics or a status page. It is called without the
	// Lifecycle's locks, in order for each slave, and must not block.
	Observe func(Event)
	// Starter, if set, records every start before the driver's Start is
	// called, with the driver named by its type's package ("ec2",
	// "libvirt", "docker", "local"), then the instance's id, and clears
	// the record once the instance is stopped. A start it refuses fails
	// with its error, as a failed Start does; an instance whose id it
	// cannot record is stopped. Nil: one master, nothing recorded.
	Starter Starter
}

// Event is a state change of a latent slave, or an instance reaped.
type Event struct {
	Slave    string
	From, To State     // equal, and Reaped set, for a reaped instance
	Since    time.Time // when the slave entered From
	Time     time.Time
	Reason   string
	Instance string // the instance id, if any
	Reaped   bool   // an instance left behind was stopped by the reaper
}

// Lifecycle starts latent slaves' instances when builds want them and
// stops them after use. It is the slave manager's Controller for its
// slaves: an application asks for a build slot on a latent slave with
// Manager.Acquire exactly as on a normal one. The manager knows a latent
// slave for exactly as long as the Lifecycle does: the Lifecycle adds it
// and forgets it (through slave.Control), never Manager.Reconfigure.
//
// Each latent slave is a state machine (see State) held in one
// mutex-guarded struct; nothing waits while holding that mutex, which is
// taken before the manager's (slave.Control's calls) and never while the
// manager's is held. Driver calls, timers and notifications run in
// goroutines the Lifecycle owns and waits for in Close.
type Lifecycle struct {
	m        *slave.Manager
	ctl      *slave.Control
	cfg      Config
	log      *slog.Logger
	notifier notify.Notifier
	starting *semaphore.Weighted // nil: no cap
	running  *semaphore.Weighted // nil: no cap

	// mu guards slaves and order. It is taken last: after a slave's mu,
	// never before it.
	mu     sync.Mutex
	slaves map[string]*latentSlave
	order  []*latentSlave // sorted by name

	ctx         context.Context // cancelled by Close
	cancel      context.CancelFunc
	shutting    atomic.Bool // Shutdown or Close was called
	wg          sync.WaitGroup
	unsubscribe func()
	closeOnce   sync.Once
}

var _ slave.Controller = (*Lifecycle)(nil)

// New builds a Lifecycle for the latent slaves and makes it m's
// Controller. It adds their Slaves to m; one m knows already (given to
// NewManager) becomes the Lifecycle's, out of Manager.Reconfigure's
// reach. New runs the reaper once before it returns, so that instances a
// crashed master left behind are stopped before any new one starts.
func New(m *slave.Manager, cfg Config, latents ...LatentSlave) (*Lifecycle, error) {
	if cfg.MasterID == "" {
		return nil, errors.New("latent: Config.MasterID must name this master")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = DefaultReapInterval
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	notifier, ok := cfg.Notifier.(*notify.Retrying)
	if !ok {
		notifier = &notify.Retrying{Notifier: cfg.Notifier, Logger: cfg.Logger}
	}
	l := &Lifecycle{m: m, cfg: cfg, log: cfg.Logger, notifier: notifier, slaves: make(map[string]*latentSlave, len(latents))}
	if cfg.MaxStarting > 0 {
		l.starting = semaphore.NewWeighted(int64(cfg.MaxStarting))
	}
	if cfg.MaxRunning > 0 {
		l.running = semaphore.NewWeighted(int64(cfg.MaxRunning))
	}
	if err := checkLatents(latents); err != nil {
		return nil, err
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	events, unsubscribe := m.Subscribe() // before the slaves are added: no attach goes unseen
	ctl, err := m.SetController(l)
	if err != nil {
		unsubscribe()
		l.cancel()
		return nil, err
	}
	l.ctl, l.unsubscribe = ctl, unsubscribe
	for _, ls := range latents {
		if err := l.add(ls); err != nil {
			unsubscribe()
			l.cancel()
			return nil, err
		}
	}
	l.wg.Go(func() {
		for ev := range events {
			l.handle(ev)
		}
	})
	_, _ = l.Reap(l.ctx) // it logs its outcome
	if cfg.ReapInterval > 0 {
		l.wg.Go(l.reapEvery)
	}
	return l, nil
}

// checkLatents refuses a nil LatentSlave and a name given twice.
func checkLatents(latents []LatentSlave) error {
	seen := make(map[string]bool, len(latents))
	var errs []error
	for _, ls := range latents {
		if ls == nil || ls.Slave() == nil {
			errs = append(errs, errors.New("latent: a nil LatentSlave, or one with a nil Slave"))
			continue
		}
		name := ls.Slave().Name()
		if seen[name] {
			errs = append(errs, fmt.Errorf("latent: slave %q given twice", name))
		}
		seen[name] = true
	}
	return errors.Join(errs...)
}

// add makes ls one of the Lifecycle's slaves, Stopped, and the manager's
// controlled slave; a connection already attached under its name is
// dropped.
func (l *Lifecycle) add(ls LatentSlave) error {
	cfg := ls.Slave()
	name := cfg.Name()
	s := &latentSlave{l: l, ls: ls, cfg: cfg, name: name, changed: make(chan struct{}), since: time.Now()}
	s.mu.Lock()
	defer s.unlock()
	if err := l.ctl.Set(cfg); err != nil {
		return fmt.Errorf("latent: slave %q: %w", name, err)
	}
	l.mu.Lock()
	l.slaves[name] = s
	i, _ := slices.BinarySearchFunc(l.order, name, func(o *latentSlave, n string) int { return strings.Compare(o.name, n) })
	l.order = slices.Insert(l.order, i, s)
	l.mu.Unlock()
	if st, _ := l.m.State(name); st.Attached {
		s.connected = true
		s.disconnect(slog.LevelWarn, "latent slave attached before the lifecycle started; dropping its connection")
	}
	return nil
}

// lookup returns the named latent slave, or nil.
func (l *Lifecycle) lookup(name string) *latentSlave {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.slaves[name]
}

// list returns the latent slaves, sorted by name.
func (l *Lifecycle) list() []*latentSlave {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.order)
}

// Reconfigure replaces the set of latent slaves while instances run on,
// like Buildbot's reconfig. A new slave is added, Stopped. A slave whose
// LatentSlave changed takes the new one (driver, password, options) at
// its next start: a running instance is left alone until it stops. A
// slave no longer listed takes no new build and is stopped once its
// builds end; Acquires waiting for it alone fail, and once its instance
// is stopped the manager forgets it. A static slave of the manager under
// a new slave's name becomes the Lifecycle's, as in New. A nil or
// duplicate LatentSlave is refused, and then nothing changes.
func (l *Lifecycle) Reconfigure(latents ...LatentSlave) error {
	if err := checkLatents(latents); err != nil {
		return err
	}
	if l.shutting.Load() {
		return ErrClosed
	}
	var errs []error
	keep := make(map[string]bool, len(latents))
	for _, ls := range latents {
		name := ls.Slave().Name()
		keep[name] = true
		s := l.lookup(name)
		if s == nil {
			errs = append(errs, l.add(ls))
			continue
		}
		s.mu.Lock()
		s.change(ls)
		s.unlock()
	}
	for _, s := range l.list() {
		if !keep[s.name] {
			s.mu.Lock()
			s.remove()
			s.unlock()
		}
	}
	return errors.Join(errs...)
}

// Admit decides a login under a latent slave's name, only while a
// substantiation waits for the attach: it accepts a proof of the password
// generated for the current start, or, unless the driver is a
// PasswordPasser that passed that one, of the slave's configured
// password. It refuses while the slave is attached, so that a second
// instance cannot disturb the first.
func (l *Lifecycle) Admit(name string, proof slave.Proof) error {
	s := l.lookup(name)
	if s == nil {
		return fmt.Errorf("%w: %q is not a latent slave", slave.ErrUnknownSlave, name)
	}
	if l.shutting.Load() {
		return ErrClosed
	}
	if st, _ := l.m.State(name); st.Attached {
		return ErrAttached
	}
	s.mu.Lock()
	defer s.unlock()
	switch {
	case l.shutting.Load():
		return ErrClosed
	case s.connected:
		return ErrAttached
	case s.state != Substantiating || s.sub.password == "":
		return ErrNotSubstantiating
	}
	perStart := proof.Proves(s.sub.password)
	configured := !s.sub.passed && s.cfg.Accepts(proof)
	if !perStart && !configured {
		return slave.ErrBadPassword
	}
	return nil
}

// Want starts a substantiation of the named latent slave unless one runs,
// or remembers the want until the slave can substantiate, and reports
// whether it started one. It never blocks.
func (l *Lifecycle) Want(name string) bool {
	s := l.lookup(name)
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.unlock()
	return s.want("a build is waiting")
}

// handle applies one manager event to its latent slave.
func (l *Lifecycle) handle(ev slave.Event) {
	s := l.lookup(ev.Slave)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.unlock()
	switch ev.Kind {
	case slave.Attached:
		s.attached()
	case slave.Detached:
		s.detached(ev.Err)
	case slave.BuildStarted, slave.BuildFinished:
		s.builds(ev.Running)
	}
}

// Substantiate returns once the named latent slave is attached, starting
// a substantiation unless one runs, and fails with that substantiation's
// error (ErrMissing, ErrDied, the driver's Start error), with
// ErrQuarantined while a back-off runs, or with ctx's cause.
//
// Manager.Acquire waits through failed substantiations until its own ctx
// ends; Acquire below gives a build slot or the failure instead.
func (l *Lifecycle) Substantiate(ctx context.Context, name string) error {
	s := l.lookup(name)
	if s == nil {
		return fmt.Errorf("%w: %q is not a latent slave", slave.ErrUnknownSlave, name)
	}
	var mine *substantiation
	for {
		s.mu.Lock()
		var err error
		done := true
		switch {
		case mine != nil && mine.err != nil:
			err = mine.err
		case s.removing:
			err = fmt.Errorf("%w: %q was removed from the configuration", slave.ErrUnknownSlave, name)
		case s.state == Idle || s.state == Running:
		case s.state == Quarantined:
			err = fmt.Errorf("%w until %s: %w", ErrQuarantined, s.until.Format(time.RFC3339), s.lastErr)
		case s.state == Stopped && l.shutting.Load():
			err = ErrClosed
		default: // Stopped, Substantiating or Stopping
			done = false
			switch {
			case s.state == Stopped && !s.connected:
				s.begin("substantiation requested", false)
			case s.state != Substantiating:
				s.wanted = true // substantiate once the stop is done
			}
			if s.state == Substantiating {
				mine = s.sub
			}
		}
		changed := s.changed
		s.unlock()
		if done {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Shutdown stops every instance the Lifecycle started: substantiations
// are abandoned, idle instances are stopped at once, busy ones once their
// builds end, and failed stops are retried. It then ends the Lifecycle's
// goroutines as Close does. At ctx's end it returns ctx's error joined
// with one error per instance it could not stop, naming the instance;
// call Close then.
func (l *Lifecycle) Shutdown(ctx context.Context) error {
	l.shutting.Store(true)
	for _, s := range l.list() {
		s.mu.Lock()
		s.shutdown()
		s.unlock()
	}
	for _, s := range l.list() {
		for {
			s.mu.Lock()
			done := s.inst == nil && !s.starting && s.state != Substantiating && s.state != Idle && s.state != Running &&
				!(s.removing && s.state == Stopping) // a removed slave is forgotten once its connection is gone
			changed := s.changed
			s.unlock()
			if done {
				break
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return errors.Join(ctx.Err(), l.leftovers())
			}
		}
	}
	return l.Close()
}

// Close aborts: pending driver calls are cancelled, timers stop and the
// Lifecycle's goroutines end before it returns. Instances still running
// are left to the next master's reaper; Close returns one error per such
// instance, naming it.
func (l *Lifecycle) Close() error {
	l.shutting.Store(true)
	l.closeOnce.Do(func() {
		l.cancel()
		l.unsubscribe()
		for _, s := range l.list() {
			s.mu.Lock() // after this no goroutine or timer starts: l.ctx is done
			s.stopTimer()
			if s.sub != nil {
				s.sub.cancel(ErrClosed)
			}
			s.unlock()
		}
		l.wg.Wait()
	})
	return l.leftovers()
}

// leftovers names the instances still running, and starts under way.
func (l *Lifecycle) leftovers() error {
	var errs []error
	for _, s := range l.list() {
		s.mu.Lock()
		switch {
		case s.inst != nil:
			why := "builds running"
			if s.lastErr != nil && s.state == Stopping {
				why = s.lastErr.Error()
			}
			errs = append(errs, fmt.Errorf("latent slave %s: instance %s not stopped (%s): %s", s.name, s.inst.ID, s.state, why))
		case s.starting:
			errs = append(errs, fmt.Errorf("latent slave %s: a start is still under way", s.name))
		}
		s.unlock()
	}
	return errors.Join(errs...)
}

// spawn runs f in a goroutine the Lifecycle waits for, unless it is
// closed. The caller holds some slave's mu, which Close takes after
// cancelling l.ctx: so no goroutine starts once Close waits.
func (l *Lifecycle) spawn(f func()) bool {
	if l.ctx.Err() != nil {
		return false
	}
	l.wg.Go(f)
	return true
}
