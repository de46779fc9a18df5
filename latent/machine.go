package latent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"reflect"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
)

// latentSlave is one latent slave's state machine. Every field below mu is
// guarded by it; methods whose comment says "mu is held" must be called
// with it held, and never wait.
type latentSlave struct {
	l    *Lifecycle
	name string
	// op serializes the driver's Start and Stop calls for this slave, the
	// reaper's included, as LatentSlave promises drivers.
	op sync.Mutex
	// rec is the Starter's record of the current or last instance until it
	// is cleared; guarded by op.
	rec StartRecord

	mu         sync.Mutex
	ls         LatentSlave  // the driver; replaced by next only with no instance
	cfg        *slave.Slave // ls.Slave()
	next       LatentSlave  // a change Reconfigure made, for the next start
	removing   bool         // gone from the configuration: stop, then forget
	noticed    bool         // notify_on_missing was told of this outage
	state      State
	since      time.Time
	reason     string
	changed    chan struct{} // closed and replaced at every transition
	sub        *substantiation
	inst       *Instance // the current instance; nil while none or Start runs
	starting   bool      // a Start call is in flight
	slot       bool      // holds a MaxRunning slot
	connected  bool      // the manager has a connection attached, as its events say
	running    int       // builds, as the manager's events say
	wanted     bool      // a Want could not be served yet
	afterStop  State     // Stopped, or Quarantined after a failure
	failures   int       // consecutive failed substantiations
	stopFails  int       // consecutive failed stops of the current instance
	until      time.Time // end of the quarantine
	lastErr    error
	lastAttach time.Time
	timer      *timer      // build_wait_timeout, quarantine or stop retry
	logs       []logRecord // written by unlock, outside mu
	events     []Event     // given to Config.Observe by unlock, outside mu
}

// substantiation is one attempt to get an instance attached, shared by
// every Want and Substantiate that arrives while it runs.
type substantiation struct {
	ctx      context.Context
	cancel   context.CancelCauseFunc
	password string        // set before Start; "" while waiting for a slot
	passed   bool          // the driver passes password: it alone admits the attach
	attached chan struct{} // closed when the slave attached
	err      error         // why it failed; guarded by the slave's mu
	wanted   bool          // a Want joined: on failure, try again after the quarantine
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs []any
}

// logf queues a log line with the slave's name and instance; mu is held.
func (s *latentSlave) logf(level slog.Level, msg string, attrs ...any) {
	attrs = append([]any{"slave", s.name}, attrs...)
	if s.inst != nil {
		attrs = append(attrs, "instance", s.inst.ID)
	}
	s.logs = append(s.logs, logRecord{level, msg, attrs})
}

// unlock releases mu, then writes the queued log lines and events.
func (s *latentSlave) unlock() {
	logs, events := s.logs, s.events
	s.logs, s.events = nil, nil
	s.mu.Unlock()
	for _, r := range logs {
		s.l.log.Log(context.Background(), r.level, r.msg, r.attrs...)
	}
	if observe := s.l.cfg.Observe; observe != nil {
		for _, ev := range events {
			observe(ev)
		}
	}
}

// set moves to state st and logs the transition once; mu is held.
func (s *latentSlave) set(st State, reason string) {
	level := slog.LevelInfo
	if st == Quarantined {
		level = slog.LevelWarn
	}
	s.logf(level, "latent slave "+st.String(), "from", s.state.String(), "reason", reason)
	now := time.Now()
	ev := Event{Slave: s.name, From: s.state, To: st, Since: s.since, Time: now, Reason: reason}
	if s.inst != nil {
		ev.Instance = s.inst.ID
	}
	s.events = append(s.events, ev)
	s.state, s.since, s.reason = st, now, reason
	close(s.changed)
	s.changed = make(chan struct{})
}

// want serves a build waiting for the slave: it substantiates now if the
// slave can, or remembers the want. It reports whether it began a new
// substantiation; mu is held.
func (s *latentSlave) want(reason string) bool {
	switch {
	case s.l.shutting.Load() || s.removing:
	case s.state == Substantiating:
		s.sub.wanted = true
	case s.state == Stopped && !s.connected:
		s.begin(reason, true)
		return true
	case s.state == Idle || s.state == Running:
		// The manager calls Want only for a detached slave: if it is still
		// attached the want is stale, else its Detached event is on the way.
		if st, _ := s.l.m.State(s.name); !st.Attached {
			s.wanted = true
		}
	default:
		s.wanted = true
	}
	return false
}

// begin starts a substantiation, for a waiting build if wanted; mu is
// held and the slave is Stopped.
func (s *latentSlave) begin(reason string, wanted bool) {
	ctx, cancel := context.WithCancelCause(s.l.ctx)
	sub := &substantiation{ctx: ctx, cancel: cancel, attached: make(chan struct{}), wanted: wanted || s.wanted}
	s.wanted = false
	s.sub = sub
	s.set(Substantiating, reason)
	if !s.l.spawn(func() { s.substantiate(sub) }) {
		s.failLocked(sub, ErrClosed)
	}
}

// substantiate takes the caps' slots, starts an instance and waits for it
// to attach, to die, or for missing_timeout.
func (s *latentSlave) substantiate(sub *substantiation) {
	l := s.l
	if err := acquire(sub.ctx, l.running); err != nil {
		s.failCtx(sub.ctx, sub, "waiting for a MaxRunning slot")
		return
	}
	s.mu.Lock()
	s.slot = true
	s.unlock()
	if err := acquire(sub.ctx, l.starting); err != nil {
		s.failCtx(sub.ctx, sub, "waiting for a MaxStarting slot")
		return
	}
	defer release(l.starting)

	s.mu.Lock()
	ls, timeout := s.ls, missingTimeout(s.cfg)
	sub.password = rand.Text()
	if p, ok := ls.(PasswordPasser); ok {
		sub.passed = p.PassesPassword()
	}
	s.starting = true
	req := StartRequest{Name: s.name, Password: sub.password, MasterID: l.cfg.MasterID}
	s.unlock()
	ctx, cancel := context.WithTimeoutCause(sub.ctx, timeout, fmt.Errorf("%w (%v)", ErrMissing, timeout))
	defer cancel()

	s.op.Lock()
	inst, err := s.start(ctx, ls, req)
	var unrecorded error
	if err == nil && s.rec != nil {
		if unrecorded = s.rec.SetInstance(ctx, inst.ID); unrecorded != nil {
			unrecorded = fmt.Errorf("recording instance %s: %w", inst.ID, unrecorded)
		}
	}
	s.op.Unlock()
	s.mu.Lock()
	s.starting = false
	switch {
	case err == nil:
		s.inst = &inst
		s.logf(slog.LevelInfo, "latent instance started", "missing_timeout", timeout)
		if s.state == Stopping { // stopped while Start ran
			s.stopInstance()
		}
	case s.state == Stopping:
		// Stopped while Start ran (it attached, then Shutdown came), and
		// Start failed: the driver left nothing running, so the stop is done.
		s.maybeFinish()
	}
	s.unlock()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		s.fail(sub, fmt.Errorf("start: %w", err))
		return
	}
	if unrecorded != nil {
		s.fail(sub, unrecorded) // stops the instance
		return
	}

	var tick <-chan time.Time
	checker, _ := ls.(Checker)
	if checker != nil {
		t := time.NewTicker(l.cfg.CheckInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-sub.attached:
			return
		case <-ctx.Done():
			s.failCtx(ctx, sub, "waiting for the attach")
			return
		case <-tick:
			if err := checker.Check(ctx, inst); err != nil && ctx.Err() == nil {
				s.fail(sub, fmt.Errorf("%w: %w", ErrDied, err))
				return
			}
		}
	}
}

// start records the start with the Starter, if any, then calls the
// driver's Start; a failed Start's record is cleared. op is held.
func (s *latentSlave) start(ctx context.Context, ls LatentSlave, req StartRequest) (Instance, error) {
	if st := s.l.cfg.Starter; st != nil {
		if err := s.clearRecord(ctx); err != nil {
			return Instance{}, fmt.Errorf("clearing the record of the previous instance: %w", err)
		}
		rec, err := st.RecordStart(ctx, s.name, driverName(ls))
		if err != nil {
			return Instance{}, fmt.Errorf("not recorded, so not started: %w", err)
		}
		s.rec = rec
	}
	inst, err := ls.Start(ctx, req)
	if err != nil {
		s.clearRecord(ctx) //nolint:errcheck // kept for the next start, which clears it first
	}
	return inst, err
}

// clearRecord clears the Starter's record of the last instance, which is
// stopped or never started, if it has one; a record it cannot clear is
// kept for the next try. op is held.
func (s *latentSlave) clearRecord(ctx context.Context) error {
	if s.rec == nil {
		return nil
	}
	if err := s.rec.Clear(ctx); err != nil {
		return err
	}
	s.rec = nil
	return nil
}

// driverName names ls's driver for a Starter: the last element of its
// type's package path.
func driverName(ls LatentSlave) string {
	t := reflect.TypeOf(ls)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return path.Base(t.PkgPath())
}

// failCtx fails sub because ctx ended while doing what.
func (s *latentSlave) failCtx(ctx context.Context, sub *substantiation, what string) {
	s.fail(sub, fmt.Errorf("%s: %w", what, context.Cause(ctx)))
}

// fail ends sub with err and stops its instance, if it is still the
// slave's substantiation and the slave did not attach meanwhile.
func (s *latentSlave) fail(sub *substantiation, err error) {
	s.mu.Lock()
	defer s.unlock()
	s.failLocked(sub, err)
}

// failLocked is fail with mu held.
func (s *latentSlave) failLocked(sub *substantiation, err error) {
	if s.sub != sub {
		return // attached, or already failed
	}
	if st, _ := s.l.m.State(s.name); st.Attached {
		return // the attach beat the failure: its event is on the way
	}
	sub.err = err
	sub.cancel(err)
	s.sub = nil
	s.lastErr = err
	// An instance that still attaches late takes no build; builds waiting
	// for this slave alone learn why, and only those that also wait for
	// other slaves make it try again after the quarantine.
	s.checkCtl("drain", s.l.ctl.Drain(s.name)) // not attached, so not busy
	s.l.ctl.FailWaiters(s.name, fmt.Errorf("latent slave %s: %w", s.name, err))
	s.wanted = s.l.ctl.Waiting(s.name) > 0
	s.logf(slog.LevelError, "latent substantiation failed", "reason", err.Error())
	if errors.Is(err, ErrMissing) || errors.Is(err, ErrDied) {
		s.notifyMissing()
	}
	s.stop(err.Error(), Quarantined)
}

// checkCtl logs a failed call of the manager's Control; mu is held. Only
// the Lifecycle forgets its slaves, so none fails but Drain of a slave
// that just took a build, whose event is on its way.
func (s *latentSlave) checkCtl(what string, err error) {
	if err != nil {
		s.logf(slog.LevelWarn, "latent slave: "+what+" failed", "reason", err.Error())
	}
}

// missingTimeout is how long an instance of cfg may take to attach.
func missingTimeout(cfg *slave.Slave) time.Duration {
	if cfg.MissingTimeoutSet() {
		return cfg.MissingTimeout()
	}
	return DefaultMissingTimeout
}

// notifyMissing tells notify_on_missing that an instance never attached,
// once per outage: until an instance attaches again, later failures of
// the slave send none. mu is held.
func (s *latentSlave) notifyMissing() {
	rcpt := s.cfg.NotifyOnMissing()
	if len(rcpt) == 0 || s.noticed {
		return
	}
	s.noticed = true
	st, _ := s.l.m.State(s.name)
	report := notify.Missing{
		Slave:         s.name,
		Recipients:    rcpt,
		LastConnected: s.lastAttach,
		Detected:      time.Now(),
		Admin:         st.Info.Admin,
		Host:          st.Info.Host,
	}
	s.l.spawn(func() { _ = s.l.notifier.SlaveMissing(s.l.ctx, report) }) // it logs its outcome
}

// attached handles the manager's Attached event; mu is held.
func (s *latentSlave) attached() {
	s.connected = true
	if s.state != Substantiating || s.sub == nil || s.sub.password == "" {
		s.disconnect(slog.LevelWarn, "latent slave attached while not substantiating; dropping its connection")
		return
	}
	s.checkCtl("undrain", s.l.ctl.Undrain(s.name)) // drained when its previous instance stopped
	close(s.sub.attached)
	s.sub = nil
	s.failures, s.until, s.noticed = 0, time.Time{}, false
	s.lastAttach = time.Now()
	s.set(Idle, "attached")
	s.idle()
}

// disconnect logs why, then drops the slave's connection; mu is held.
func (s *latentSlave) disconnect(level slog.Level, why string) {
	s.logf(level, why, "state", s.state.String())
	if err := s.l.ctl.Disconnect(s.name, errors.New(why)); err != nil && !errors.Is(err, slave.ErrNotAttached) { // detached: its event is on the way
		s.logf(slog.LevelWarn, "latent slave could not be disconnected", "reason", err.Error())
	}
}

// detached handles the manager's Detached event; mu is held.
func (s *latentSlave) detached(cause error) {
	s.connected, s.running = false, 0
	switch s.state {
	case Idle, Running:
		reason := "connection lost"
		if cause != nil {
			reason = cause.Error()
		}
		s.logf(slog.LevelWarn, "latent slave detached unexpectedly; stopping its instance", "reason", reason)
		s.stop("detached: "+reason, Stopped)
	case Stopping:
		s.maybeFinish()
	case Stopped:
		if s.wanted {
			s.want("a build is waiting")
		}
	}
}

// builds handles the manager's build events; mu is held.
func (s *latentSlave) builds(running int) {
	s.running = running
	switch {
	case s.state == Idle && running > 0:
		s.stopTimer()
		s.set(Running, "build started")
	case s.state == Running && running == 0:
		s.set(Idle, "last build finished")
		s.idle()
	}
}

// idle arms build_wait_timeout, or stops at once while shutting down; mu
// is held and the slave is Idle.
func (s *latentSlave) idle() {
	switch {
	case s.l.shutting.Load():
		s.drainAndStop("shutting down")
		return
	case s.removing:
		s.drainAndStop("removed from the configuration")
		return
	}
	wait := DefaultBuildWaitTimeout
	if w, ok := s.ls.(BuildWaiter); ok {
		wait = w.BuildWaitTimeout()
	}
	if wait < 0 {
		return
	}
	s.after(wait, func() { s.drainAndStop(fmt.Sprintf("build_wait_timeout (%v) expired", wait)) })
}

// drainAndStop stops the Idle slave's instance, unless a build got its
// slot first; mu is held.
func (s *latentSlave) drainAndStop(reason string) {
	if s.state != Idle {
		return
	}
	if err := s.l.ctl.Drain(s.name); err != nil {
		// A build started or the slave detached: that event is on its way.
		s.logf(slog.LevelDebug, "latent slave not drained", "reason", err.Error())
		return
	}
	s.stop(reason, Stopped)
}

// stop moves to Stopping and stops the instance, then goes to next; mu is
// held.
func (s *latentSlave) stop(reason string, next State) {
	s.stopTimer()
	s.afterStop = next
	s.set(Stopping, reason)
	s.stopInstance()
}

// stopInstance calls the driver's Stop in a goroutine, or finishes the
// stop if there is no instance; while Start runs, substantiate calls it
// again once Start returns. mu is held.
func (s *latentSlave) stopInstance() {
	if s.starting {
		return
	}
	if s.inst == nil {
		s.maybeFinish()
		return
	}
	inst, ls := *s.inst, s.ls // ls started inst: next waits for the stop
	s.l.spawn(func() { s.runStop(ls, inst) })
}

func (s *latentSlave) runStop(ls LatentSlave, inst Instance) {
	ctx, cancel := context.WithTimeout(s.l.ctx, s.l.cfg.StopTimeout)
	s.op.Lock()
	err := ls.Stop(ctx, inst)
	var uncleared error
	if err == nil {
		uncleared = s.clearRecord(ctx)
	}
	s.op.Unlock()
	cancel()
	s.mu.Lock()
	defer s.unlock()
	if err != nil {
		s.stopFails++
		s.lastErr = fmt.Errorf("stop instance %s: %w", inst.ID, err)
		retry := quarantine.Delay(s.stopFails)
		s.logf(slog.LevelError, "latent instance did not stop; will retry", "reason", err.Error(), "retry_in", retry)
		s.after(retry, s.stopInstance)
		return
	}
	s.logf(slog.LevelInfo, "latent instance stopped")
	if uncleared != nil {
		s.logf(slog.LevelWarn, "latent instance stopped, but its start record not cleared; the next start clears it first", "reason", uncleared.Error())
	}
	s.inst = nil
	s.stopFails = 0
	if s.connected { // a machine destroyed without closing its connection
		s.disconnect(slog.LevelInfo, "latent instance stopped but its connection remains")
	}
	s.maybeFinish()
}

// maybeFinish leaves Stopping once the instance is stopped and its
// connection gone; mu is held.
func (s *latentSlave) maybeFinish() {
	if s.state != Stopping || s.inst != nil || s.starting || s.connected {
		return
	}
	if s.slot {
		s.slot = false
		release(s.l.running)
	}
	if s.removing {
		s.forget()
		return
	}
	s.applyChange()
	if s.afterStop == Quarantined && !s.l.shutting.Load() {
		s.failures++
		wait := quarantine.Delay(s.failures)
		s.set(Quarantined, fmt.Sprintf("failure %d, back-off %v: %v", s.failures, wait, s.lastErr))
		s.until = s.since.Add(wait)
		s.after(wait, func() {
			s.until = time.Time{}
			s.set(Stopped, "quarantine over")
			if s.wanted {
				s.want("a build is waiting")
			}
		})
		return
	}
	s.set(Stopped, "instance stopped")
	if s.wanted {
		s.want("a build is waiting")
	}
}

// change takes ls as the slave's driver at its next start, or at once
// if it has no instance; mu is held.
func (s *latentSlave) change(ls LatentSlave) {
	if s.removing {
		s.removing = false
		s.logf(slog.LevelInfo, "latent slave back in the configuration")
	}
	if ls == s.ls {
		s.next = nil
		return
	}
	s.next = ls
	if s.state == Stopped || s.state == Quarantined {
		s.applyChange()
	} else {
		s.logf(slog.LevelInfo, "latent slave changed: the change takes effect at its next start", "state", s.state.String())
	}
}

// applyChange makes a pending change the slave's; mu is held and the
// slave has no instance.
func (s *latentSlave) applyChange() {
	if s.next == nil {
		return
	}
	ls := s.next
	s.next = nil
	s.checkCtl("set", s.l.ctl.Set(ls.Slave()))
	s.ls, s.cfg = ls, ls.Slave()
	s.logf(slog.LevelInfo, "latent slave changed")
}

// remove stops the slave for good: builds waiting for it alone fail, it
// takes no new one, and once its instance is stopped it is forgotten. mu
// is held.
func (s *latentSlave) remove() {
	if s.removing {
		return
	}
	s.removing, s.wanted, s.next = true, false, nil
	why := errors.New("removed from the configuration")
	s.l.ctl.FailWaiters(s.name, fmt.Errorf("%w: latent slave %s was %w", slave.ErrUnknownSlave, s.name, why))
	s.logf(slog.LevelInfo, "latent slave removed from the configuration; stopping it", "state", s.state.String())
	switch s.state {
	case Stopped, Quarantined:
		s.stopTimer()
		s.forget()
	case Substantiating:
		s.sub.cancel(why)
	case Idle:
		s.stopTimer()
		s.drainAndStop(why.Error())
	}
	// Running: stopped when its last build ends; Stopping: forgotten
	// once stopped.
}

// forget ends a removed slave, which has no instance: the manager and
// the Lifecycle forget it. mu is held.
func (s *latentSlave) forget() {
	s.checkCtl("remove", s.l.ctl.Remove(s.name))
	l := s.l
	l.mu.Lock()
	if l.slaves[s.name] == s {
		delete(l.slaves, s.name)
		l.order = slices.DeleteFunc(l.order, func(o *latentSlave) bool { return o == s })
	}
	l.mu.Unlock()
	s.until = time.Time{}
	s.set(Stopped, "removed from the configuration")
}

// shutdown starts stopping the slave for Shutdown; mu is held.
func (s *latentSlave) shutdown() {
	s.wanted = false
	switch s.state {
	case Substantiating:
		s.sub.cancel(ErrClosed)
	case Idle:
		s.stopTimer()
		s.drainAndStop("shutting down")
	case Quarantined:
		s.stopTimer()
		s.until = time.Time{}
		s.set(Stopped, "shutting down")
	}
}

// timer is a time.AfterFunc the Lifecycle waits for.
type timer struct {
	t  *time.Timer
	wg *sync.WaitGroup
}

// after arms the slave's one timer to run f with mu held after d,
// replacing any armed one; mu is held.
func (s *latentSlave) after(d time.Duration, f func()) {
	s.stopTimer()
	if s.l.ctx.Err() != nil {
		return
	}
	t := &timer{wg: &s.l.wg}
	t.wg.Add(1)
	t.t = time.AfterFunc(d, func() {
		defer t.wg.Done()
		s.mu.Lock()
		defer s.unlock()
		if s.timer == t {
			s.timer = nil
			f()
		}
	})
	s.timer = t
}

// stopTimer disarms the slave's timer; mu is held.
func (s *latentSlave) stopTimer() {
	if t := s.timer; t != nil {
		s.timer = nil
		if t.t.Stop() {
			t.wg.Done()
		}
	}
}

// acquire takes a slot of sem; a nil sem has no cap.
func acquire(ctx context.Context, sem *semaphore.Weighted) error {
	if sem == nil {
		return nil
	}
	return sem.Acquire(ctx, 1)
}

// release gives back a slot of sem.
func release(sem *semaphore.Weighted) {
	if sem != nil {
		sem.Release(1)
	}
}
