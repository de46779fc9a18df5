package commands

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/buildslave/buildslave/internal/procgroup"
)

// pipeGrace bounds how long the output pipes, or the terminal, may stay
// open after the process exited (a background grandchild may hold them).
const pipeGrace = 5 * time.Second

// process is a program to run in a group of its own (a process group on
// Unix, a job object on Windows: see procgroup), its output going to the
// master. shell and cpdir use it.
type process struct {
	script     string   // a string command, which a shell runs (see execCmd)
	argv       []string // a list command; nil for a script
	display    string   // the command as the header shows it
	argvRepr   string   // the command as the header's argv shows it (secrets obfuscated)
	dir        string
	env        []string // the complete environment (see childEnv)
	logEnviron bool     // show env in the header (only when the master asks)
	stdin      []byte
	wantStdout bool
	wantStderr bool
	logfiles   []logfile
	usePTY     bool // run on a pseudo-terminal where there is one (see openTerminal)
	timeout    time.Duration
	maxTime    time.Duration
	sigterm    time.Duration
	interrupt  syscall.Signal
}

// run runs the process to its end and reports its headers, output and rc;
// a process that cannot start has rc -1.
func (p *process) run(ctx context.Context, j *job) error {
	start := time.Now()
	if err := os.MkdirAll(p.dir, 0o777); err != nil {
		p.fail(j, err)
		return nil
	}
	activity := make(chan struct{}, 1)
	stdout := &stream{out: j.out, key: "stdout", want: p.wantStdout, activity: activity}
	cmd := p.execCmd()
	cmd.Dir, cmd.Env, cmd.WaitDelay = p.dir, p.env, pipeGrace
	var term *terminal
	var noPTY error
	if p.usePTY {
		term, noPTY = openTerminal(cmd)
	}
	p.headers(j.out, term != nil, noPTY)
	if term == nil {
		cmd.Stdout = stdout
		cmd.Stderr = &stream{out: j.out, key: "stderr", want: p.wantStderr, activity: activity}
		if p.stdin != nil {
			cmd.Stdin = bytes.NewReader(p.stdin)
		}
	}
	watchers := make([]*logWatcher, len(p.logfiles))
	for i, lf := range p.logfiles {
		watchers[i] = newLogWatcher(lf, p.dir, j.out, activity)
	}
	group, err := procgroup.Start(cmd)
	if term != nil {
		term.started()
	}
	if err != nil {
		if term != nil {
			term.pty.Close()
		}
		p.fail(j, err)
		return nil
	}
	defer group.Close()
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is read from cmd.ProcessState
		close(exited)
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range watchers {
		wg.Go(func() { w.watch(stop) })
	}
	copied := make(chan struct{})
	if term != nil {
		wg.Go(func() {
			defer close(copied)
			term.copyOut(stdout)
		})
		if p.stdin != nil {
			wg.Go(func() { term.writeIn(p.stdin) })
		}
	}
	hardKilled := false
	sup := supervisor{timeout: p.timeout, maxTime: p.maxTime, sigtermTime: p.sigterm,
		interrupt: p.interrupt, display: p.argvRepr,
		signal: func(sig syscall.Signal) {
			hardKilled = hardKilled || sig == syscall.SIGKILL
			_ = group.Signal(sig) // an error: the group is gone
		},
		report: func(msg string) { j.out.header("%s", msg) }}
	killed := sup.watch(ctx, activity, j.interrupted, j.why, exited)
	if term != nil {
		term.finish(copied)
	}
	close(stop)
	wg.Wait()
	j.out.endStreams()
	rc := cmd.ProcessState.ExitCode()
	if how := killedBy(cmd.ProcessState, hardKilled); how != "" {
		j.out.header("process killed by %s\n", how)
		rc = -1
	}
	if killed && rc == 0 {
		rc = -1
	}
	j.out.send("rc", rc)
	j.out.header("elapsedTime=%0.6f\n", time.Since(start).Seconds())
	return nil
}

// fail reports a process that could not start as rc -1.
func (p *process) fail(j *job, err error) {
	j.out.write("stderr", "", fmt.Appendf(nil, "error starting %s: %v\n", p.argvRepr, err))
	j.out.send("rc", -1)
}

// headers sends the header lines the stock slave sends before it starts a
// process; onPTY says whether it runs on a pseudo-terminal, and noPTY why
// not, when usePTY asked for one.
func (p *process) headers(out *output, onPTY bool, noPTY error) {
	out.header("%s\n", p.display)
	msg := " in dir " + p.dir
	if p.timeout > 0 {
		msg += fmt.Sprintf(" (timeout %s %s)", seconds(p.timeout), plural(p.timeout, "sec", "secs"))
	}
	if p.maxTime > 0 {
		msg += fmt.Sprintf(" (maxTime %s %s)", seconds(p.maxTime), plural(p.maxTime, "sec", "secs"))
	}
	out.header("%s\n", msg)
	names := make([]string, len(p.logfiles))
	for i, lf := range p.logfiles {
		names[i] = fmt.Sprintf("'%s': '%s'", lf.name, lf.path)
	}
	out.header(" watching logfiles {%s}\n", strings.Join(names, ", "))
	out.header(" argv: %s\n", p.argvRepr)
	if p.logEnviron {
		var b strings.Builder
		b.WriteString(" environment:\n")
		for _, kv := range p.env { // sorted by childEnv
			b.WriteString("  " + kv + "\n")
		}
		out.header("%s", b.String())
	}
	if p.stdin != nil {
		out.header(" writing %d bytes to stdin\n", len(p.stdin))
	}
	if noPTY != nil {
		out.header(" WARNING: usePTY asked for a pseudo-terminal, but %v; using pipes\n", noPTY)
	}
	out.header(" using PTY: %s\n", map[bool]string{false: "False", true: "True"}[onPTY])
}

func plural(d time.Duration, one, many string) string {
	if d == time.Second {
		return one
	}
	return many
}

// stream is the Writer behind a process's stdout or stderr.
type stream struct {
	out      *output
	key      string
	want     bool
	activity chan<- struct{}
}

func (s *stream) Write(p []byte) (int, error) {
	ping(s.activity)
	if s.want {
		s.out.write(s.key, "", p)
	}
	return len(p), nil
}

// ping tells a supervisor there was output, without ever blocking.
func ping(activity chan<- struct{}) {
	select {
	case activity <- struct{}{}:
	default:
	}
}
