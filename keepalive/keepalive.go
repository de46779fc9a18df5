// Package keepalive sends periodic keepalives on an attached slave
// connection and reports the connection lost when a reply does not come in
// time.
package keepalive

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// MaxDefaultTimeout caps the default reply bound.
const MaxDefaultTimeout = time.Minute

// ErrNoReply is wrapped by the error a Loop reports when a keepalive went
// unanswered within the reply bound.
var ErrNoReply = errors.New("keepalive: no reply")

// Pinger is a connection that can carry a keepalive; slave.Conn is one.
type Pinger interface {
	Keepalive(ctx context.Context) error
}

// DefaultTimeout is the reply bound used for an interval when none is
// given: half the interval, at most MaxDefaultTimeout.
func DefaultTimeout(interval time.Duration) time.Duration {
	return min(interval/2, MaxDefaultTimeout)
}

// Loop sends a keepalive every interval after the previous reply, give or
// take half a second (at most a 64th of the interval): keepalives are due
// on a grid, so that many slaves' loops fire together. It keeps
// no goroutine while it waits: each keepalive runs in the goroutine of a
// timer, so a slow reply only ever delays its own connection, never other
// slaves or the caller. A Loop is started by Start and ended by Stop.
type Loop struct {
	p        Pinger
	interval time.Duration
	timeout  time.Duration
	onAlive  func()
	onLost   func(error)

	mu sync.Mutex
	// timer runs tick at the next keepalive or, while one is in flight, at
	// the end of its reply bound: one timer a slave, none made per
	// keepalive.
	timer   *time.Timer
	due     time.Time               // when timer is due
	cancel  context.CancelCauseFunc // of the keepalive in flight, if any
	stopped bool
	wg      sync.WaitGroup // keepalives in flight
}

// errNoReply is the cause of a keepalive's context once its reply bound
// ran out.
var errNoReply = errors.New("no reply within the bound")

// Start begins sending keepalives on p every interval. A reply must come
// within timeout (0 means DefaultTimeout(interval)); onAlive is called
// after each reply and onLost, once, with an error wrapping ErrNoReply or
// the connection's own error, after which the loop is stopped. An interval
// of zero or less sends nothing: the returned Loop is already stopped.
// Callbacks run without any lock held by the Loop; they must not call
// Stop, which waits for them.
func Start(p Pinger, interval, timeout time.Duration, onAlive func(), onLost func(error)) *Loop {
	l := &Loop{p: p, interval: interval, timeout: timeout, onAlive: onAlive, onLost: onLost}
	if interval <= 0 {
		l.stopped = true
		return l
	}
	if l.timeout <= 0 {
		l.timeout = DefaultTimeout(interval)
	}
	l.mu.Lock()
	now := time.Now()
	d := onGrain(now, interval)
	l.due = now.Add(d)
	l.timer = time.AfterFunc(d, l.tick)
	l.mu.Unlock()
	return l
}

// tick sends the next keepalive or, while one is in flight, ends it: its
// reply bound has run out. A run of the timer that a reset has overtaken
// (it comes before the current due time) does nothing.
func (l *Loop) tick() {
	l.mu.Lock()
	switch {
	case l.stopped || time.Now().Before(l.due):
		l.mu.Unlock()
		return
	case l.cancel != nil:
		l.cancel(errNoReply)
		l.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	l.cancel = cancel
	l.reset(l.timeout)
	l.wg.Add(1)
	l.mu.Unlock()

	err := l.p.Keepalive(ctx)
	if err != nil && context.Cause(ctx) == errNoReply {
		err = fmt.Errorf("%w within %v", ErrNoReply, l.timeout)
	}
	cancel(nil)

	l.mu.Lock()
	l.timer.Stop()
	l.cancel = nil
	stopped := l.stopped
	if err != nil {
		l.stopped = true
	}
	l.mu.Unlock()
	defer l.wg.Done()

	switch {
	case stopped:
	case err != nil:
		l.onLost(err)
	default:
		l.onAlive()
		l.mu.Lock() // after the callback, so the next one happens after it
		if !l.stopped {
			l.reset(onGrain(time.Now(), l.interval))
		}
		l.mu.Unlock()
	}
}

// reset sets the timer to d from now; l.mu is held.
func (l *Loop) reset(d time.Duration) {
	l.due = time.Now().Add(d)
	l.timer.Reset(d)
}

// onGrain returns interval, moved by up to half a grain (a 32nd of
// interval, at most 1 s) so that now plus it falls on a multiple of the
// grain since the Unix epoch. Keepalives are due on that grid: a master's
// slaves with one interval, however their attaches were spread, fire in
// bursts that wake the process once, not once a slave (10,000 slaves with
// a 60 s interval woke it 167 times a second). Rounding to the nearest
// point keeps the interval right on average.
func onGrain(now time.Time, interval time.Duration) time.Duration {
	g := min(time.Second, interval/32)
	if g <= 0 {
		return interval
	}
	off := time.Duration(now.Add(interval).UnixNano() % int64(g))
	if off < 0 {
		off += g
	}
	if off < g/2 {
		return interval - off
	}
	return interval + g - off
}

// Stop ends the loop: no keepalive is sent and no callback runs after it
// returns; a keepalive in flight is cancelled and waited for. Stop is
// idempotent.
func (l *Loop) Stop() {
	l.mu.Lock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.cancel != nil {
		l.cancel(nil)
	}
	l.mu.Unlock()
	l.wg.Wait()
}
