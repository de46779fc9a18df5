package commands

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// fakeProcess stands in for a process group: it records signals with the
// (bubble) time since start and exits on the signals listed in dieOn.
type fakeProcess struct {
	mu      sync.Mutex
	start   time.Time
	signals []string
	reports []string
	dieOn   map[syscall.Signal]bool
	exited  chan struct{}
}

func newFakeProcess(dieOn ...syscall.Signal) *fakeProcess {
	p := &fakeProcess{start: time.Now(), dieOn: map[syscall.Signal]bool{}, exited: make(chan struct{})}
	for _, s := range dieOn {
		p.dieOn[s] = true
	}
	return p
}

func (p *fakeProcess) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signals = append(p.signals, fmt.Sprintf("%s@%v", signalName(sig), time.Since(p.start)))
	if p.dieOn[sig] {
		close(p.exited)
		p.dieOn = nil
	}
}

func (p *fakeProcess) report(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reports = append(p.reports, msg)
}

// seen returns the signals and reports so far.
func (p *fakeProcess) seen() (signals string, reports []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.signals, " "), slices.Clone(p.reports)
}

// supervise runs s.watch on p in the background; the returned function
// waits for it and returns whether it killed.
func supervise(ctx context.Context, s supervisor, p *fakeProcess, activity, interrupted chan struct{}) func() bool {
	s.signal, s.report, s.display = p.signal, p.report, "['sleep', '9']"
	done := make(chan bool, 1)
	go func() { done <- s.watch(ctx, activity, interrupted, func() string { return "stop it" }, p.exited) }()
	return func() bool { return <-done }
}

func TestSupervisorNoOutputTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProcess(syscall.SIGKILL)
		activity := make(chan struct{}, 1)
		wait := supervise(t.Context(), supervisor{timeout: 10 * time.Second, interrupt: syscall.SIGKILL}, p, activity, nil)
		time.Sleep(8 * time.Second)
		activity <- struct{}{} // output resets the timer
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if sig, _ := p.seen(); sig != "" {
			t.Fatalf("signalled %v despite output 9 s ago", sig)
		}
		if !wait() {
			t.Error("watch says it did not kill")
		}
		got, reports := p.seen()
		if got != "KILL@18s" {
			t.Errorf("signals %q, want KILL@18s", got)
		}
		want := "\ncommand timed out: 10 seconds without output running ['sleep', '9'], attempting to kill\n"
		if len(reports) != 1 || reports[0] != want {
			t.Errorf("reports %q", reports)
		}
	})
}

func TestSupervisorMaxTimeWithSigterm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProcess(syscall.SIGKILL) // ignores SIGTERM
		activity := make(chan struct{}, 1)
		wait := supervise(t.Context(), supervisor{timeout: 10 * time.Second, maxTime: 25 * time.Second,
			sigtermTime: 3 * time.Second, interrupt: syscall.SIGKILL}, p, activity, nil)
		for range 5 {
			time.Sleep(5 * time.Second)
			activity <- struct{}{}
		}
		wait()
		got, reports := p.seen()
		if got != "TERM@25s KILL@28s" {
			t.Errorf("signals %q", got)
		}
		if !strings.Contains(reports[0], "25 seconds elapsed") {
			t.Errorf("reports %q", reports)
		}
	})
}

func TestSupervisorSigtermEnough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProcess(syscall.SIGTERM)
		wait := supervise(t.Context(), supervisor{maxTime: time.Second, sigtermTime: 3 * time.Second,
			interrupt: syscall.SIGKILL}, p, nil, nil)
		if !wait() {
			t.Error("not reported as killed")
		}
		if got, _ := p.seen(); got != "TERM@1s" {
			t.Errorf("signals %q", got)
		}
	})
}

func TestSupervisorInterruptEscalates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProcess(syscall.SIGKILL) // ignores SIGINT
		interrupted := make(chan struct{})
		wait := supervise(t.Context(), supervisor{interrupt: syscall.SIGINT}, p, nil, interrupted)
		time.Sleep(time.Minute)
		close(interrupted)
		wait()
		got, reports := p.seen()
		if got != "INT@1m0s KILL@1m10s" {
			t.Errorf("signals %q", got)
		}
		if len(reports) != 2 || reports[0] != "\ncommand interrupted (stop it), attempting to kill\n" ||
			!strings.Contains(reports[1], "SIGINT did not stop the process") {
			t.Errorf("reports %q", reports)
		}
	})
}

func TestSupervisorContextKillsSilently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProcess(syscall.SIGKILL)
		ctx, cancel := context.WithCancel(t.Context())
		wait := supervise(ctx, supervisor{interrupt: syscall.SIGKILL}, p, nil, nil)
		cancel()
		wait()
		if got, reports := p.seen(); got != "KILL@0s" || len(reports) != 0 {
			t.Errorf("signals %q reports %q", got, reports)
		}
	})
}

func TestSupervisorProcessExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProcess()
		wait := supervise(t.Context(), supervisor{timeout: time.Hour, maxTime: time.Hour}, p, nil, nil)
		time.Sleep(time.Minute)
		close(p.exited)
		if got, _ := p.seen(); wait() || got != "" {
			t.Errorf("killed; signals %q", got)
		}
	})
}
