package commands

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"time"
)

// killGrace is how long a process group may outlive an interrupt signal
// other than SIGKILL before it gets SIGKILL.
const killGrace = 10 * time.Second

// supervisor owns the clock of one running process: the no-output timeout,
// maxTime, interrupts, and the escalation that follows any of them:
//
//	running ──timeout/maxTime/interrupt/ctx──▶ [SIGTERM, wait sigtermTime] ──▶
//	interrupt signal ──wait killGrace (unless it was SIGKILL)──▶ SIGKILL ──▶ wait for exit
//
// Every signal goes to the whole process group (through signal).
type supervisor struct {
	timeout     time.Duration // no output for this long kills (0: never)
	maxTime     time.Duration // running this long kills (0: never)
	sigtermTime time.Duration // >0: send SIGTERM first and wait this long
	interrupt   syscall.Signal
	display     string // the command, for messages

	signal func(syscall.Signal)
	report func(msg string) // a line for the header stream
}

// watch runs until exited is closed and says whether it signalled the
// process. activity gets a value whenever the process shows output;
// cancelling ctx kills the process without a report.
func (s *supervisor) watch(ctx context.Context, activity, interrupted <-chan struct{}, why func() string, exited <-chan struct{}) (killed bool) {
	idle, idleC := timerFor(s.timeout)
	maxT, maxC := timerFor(s.maxTime)
	defer stopTimers(idle, maxT)
	var reason string
wait:
	for {
		select {
		case <-exited:
			return false
		case <-activity:
			if idle != nil {
				idle.Reset(s.timeout)
			}
		case <-idleC:
			reason = fmt.Sprintf("command timed out: %s seconds without output running %s", seconds(s.timeout), s.display)
			break wait
		case <-maxC:
			reason = fmt.Sprintf("command timed out: %s seconds elapsed running %s", seconds(s.maxTime), s.display)
			break wait
		case <-interrupted:
			reason = "command interrupted"
			if w := why(); w != "" {
				reason += " (" + w + ")"
			}
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if reason != "" {
		s.report("\n" + reason + ", attempting to kill\n")
	}
	if s.sigtermTime > 0 {
		s.signal(syscall.SIGTERM)
		if waitExit(exited, s.sigtermTime) {
			return true
		}
	}
	s.signal(s.interrupt)
	if s.interrupt != syscall.SIGKILL {
		if waitExit(exited, killGrace) {
			return true
		}
		s.report(fmt.Sprintf("SIG%s did not stop the process, sending SIGKILL\n", signalName(s.interrupt)))
		s.signal(syscall.SIGKILL)
	}
	<-exited
	return true
}

// waitExit waits up to d for exited and says whether it was closed.
func waitExit(exited <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-exited:
		return true
	case <-t.C:
		return false
	}
}

func timerFor(d time.Duration) (*time.Timer, <-chan time.Time) {
	if d <= 0 {
		return nil, nil
	}
	t := time.NewTimer(d)
	return t, t.C
}

func stopTimers(ts ...*time.Timer) {
	for _, t := range ts {
		if t != nil {
			t.Stop()
		}
	}
}

// seconds formats d as the master wrote it: "1200", "0.5".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}
