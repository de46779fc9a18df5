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
// Manager.Acquire exactly as on a normal one.
//
// Each latent slave is a state machine (see State) held in one
// mutex-guarded struct; nothing waits while holding that mutex, which is
// taken before the manager's and never while the manager's is held. Driver
// calls, timers and notifications run in goroutines the Lifecycle owns
// and waits for in Close.
type Lifecycle struct {
	m        *slave.Manager
	cfg      Config
	log      *slog.Logger
	notifier notify.Notifier
	starting *semaphore.Weighted // nil: no cap
	running  *semaphore.Weighted // nil: no cap

	slaves map[string]*latentSlave // fixed after New
	order  []*latentSlave          // sorted by name

	ctx         context.Context // cancelled by Close
	cancel      context.CancelFunc
	shutting    atomic.Bool // Shutdown or Close was called
	wg          sync.WaitGroup
	unsubscribe func()
	closeOnce   sync.Once
}

var _ slave.Controller = (*Lifecycle)(nil)

// New builds a Lifecycle for the latent slaves and makes it m's
// Controller. Every latent slave's Slave() must be among m's slaves. New
// runs the reaper once before it returns, so that instances a crashed
// master left behind are stopped before any new one starts.
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
	var errs []error
	for _, ls := range latents {
		cfg := ls.Slave()
		name := cfg.Name()
		if _, ok := m.State(name); !ok {
			errs = append(errs, fmt.Errorf("latent: slave %q is not configured in the manager", name))
			continue
		}
		if l.slaves[name] != nil {
			errs = append(errs, fmt.Errorf("latent: slave %q given twice", name))
			continue
		}
		s := &latentSlave{l: l, ls: ls, cfg: cfg, name: name, changed: make(chan struct{}), since: time.Now()}
		l.slaves[name] = s
		l.order = append(l.order, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(l.order, func(a, b *latentSlave) int { return strings.Compare(a.name, b.name) })
	l.ctx, l.cancel = context.WithCancel(context.Background())

	events, unsubscribe := m.Subscribe() // before SetController: no attach goes unseen
	l.unsubscribe = unsubscribe
	for _, s := range l.order {
		if st, _ := m.State(s.name); st.Attached {
			s.mu.Lock()
			s.connected = true
			s.disconnect(slog.LevelWarn, "latent slave attached before the lifecycle started; dropping its connection")
			s.unlock()
		}
	}
	m.SetController(l)
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

// Controls reports whether name is one of the Lifecycle's latent slaves.
func (l *Lifecycle) Controls(name string) bool { return l.slaves[name] != nil }

// Admit decides a login under a latent slave's name: it accepts a proof
// of the password generated for the current start, or of the slave's
// configured one, only while a substantiation waits for the attach. It refuses while
// the slave is attached, so that a second instance cannot disturb the
// first.
func (l *Lifecycle) Admit(name string, proof slave.Proof) error {
	s := l.slaves[name]
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
	if !s.cfg.Accepts(proof) && !perStart {
		return slave.ErrBadPassword
	}
	return nil
}

// Want starts a substantiation of the named latent slave unless one runs,
// or remembers the want until the slave can substantiate, and reports
// whether it started one. It never blocks.
func (l *Lifecycle) Want(name string) bool {
	s := l.slaves[name]
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.unlock()
	return s.want("a build is waiting")
}

// handle applies one manager event to its latent slave.
func (l *Lifecycle) handle(ev slave.Event) {
	s := l.slaves[ev.Slave]
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
	s := l.slaves[name]
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
	for _, s := range l.order {
		s.mu.Lock()
		s.shutdown()
		s.unlock()
	}
	for _, s := range l.order {
		for {
			s.mu.Lock()
			done := s.inst == nil && !s.starting && s.state != Substantiating && s.state != Idle && s.state != Running
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
		for _, s := range l.order {
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
	for _, s := range l.order {
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
