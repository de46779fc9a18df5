// Package attachtimer bounds a master's attach sequence, each step by a
// step timeout and the whole by a total, with one timer per connection
// that ends the connection when either runs out: no context, timer or
// error is made per step, and a connection waiting for an answer is woken
// by its own end.
package attachtimer

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Timer bounds one connection's attach sequence. Stop it once the
// sequence is over.
type Timer struct {
	t           *time.Timer
	step, total time.Duration
	end         time.Time              // of the whole sequence
	name        atomic.Pointer[string] // of the step under way
	fired       atomic.Pointer[error]  // the cause end was called with
}

// Start starts the bounds of a sequence of steps of at most step each and
// total in all. When one runs out, end is called, once, with a cause that
// says which: `getWorkerInfo: no answer within 10s` or "attach sequence
// took longer than 1m0s".
func Start(step, total time.Duration, end func(cause error)) *Timer {
	t := &Timer{step: step, total: total, end: time.Now().Add(total)}
	t.t = time.AfterFunc(min(step, total), func() {
		var cause error
		switch name := t.name.Load(); {
		case !time.Now().Before(t.end):
			cause = fmt.Errorf("attach sequence took longer than %v", t.total)
		case name == nil: // before the first step: a write that never ended
			cause = fmt.Errorf("no answer within %v", t.step)
		default:
			cause = fmt.Errorf("%s: no answer within %v", *name, t.step)
		}
		if t.fired.CompareAndSwap(nil, &cause) {
			end(cause)
		}
	})
	return t
}

// Step runs f, the step named name, within the step timeout (and what is
// left of the total). Its error is prefixed with the name; if the timer
// ended the connection meanwhile, the error is the timer's cause, whatever
// f saw of the end.
func (t *Timer) Step(name string, f func() error) error {
	t.name.Store(&name)
	t.reset(t.step)
	if err := f(); err != nil {
		if cause := t.fired.Load(); cause != nil {
			return *cause
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Rest gives the next wait what is left of the total, without the step
// timeout: for a step whose length is not the peer's to keep short (the
// manager's check of a duplicate name, which pings the older connection).
func (t *Timer) Rest() { t.reset(t.total) }

// Stop ends the bounds.
func (t *Timer) Stop() { t.t.Stop() }

// reset gives the connection d from now, within the whole sequence's end.
func (t *Timer) reset(d time.Duration) {
	t.t.Reset(min(d, time.Until(t.end)))
}
