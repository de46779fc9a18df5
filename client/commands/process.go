package commands

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// pipeGrace bounds how long the output pipes may stay open after the
// process exited (a background grandchild may hold them).
const pipeGrace = 5 * time.Second

// process is a program to run in its own process group, its output going
// to the master. shell and cpdir use it.
type process struct {
	argv       []string
	display    string // the command as the header shows it
	argvRepr   string // argv as the header shows it (secrets obfuscated)
	dir        string
	env        []string // the complete environment (see childEnv)
	logEnviron bool     // show env in the header (only when the master asks)
	stdin      []byte
	wantStdout bool
	wantStderr bool
	logfiles   []logfile
	usePTY     bool // asked for; pipes are used anyway
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
	p.headers(j.out)
	activity := make(chan struct{}, 1)
	cmd := &exec.Cmd{
		Path:        lookPath(p.argv[0], p.env),
		Args:        p.argv,
		Dir:         p.dir,
		Env:         p.env,
		Stdout:      &stream{out: j.out, key: "stdout", want: p.wantStdout, activity: activity},
		Stderr:      &stream{out: j.out, key: "stderr", want: p.wantStderr, activity: activity},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		WaitDelay:   pipeGrace,
	}
	if p.stdin != nil {
		cmd.Stdin = bytes.NewReader(p.stdin)
	}
	watchers := make([]*logWatcher, len(p.logfiles))
	for i, lf := range p.logfiles {
		watchers[i] = newLogWatcher(lf, p.dir, j.out, activity)
	}
	if err := cmd.Start(); err != nil {
		p.fail(j, err)
		return nil
	}
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
	sup := supervisor{timeout: p.timeout, maxTime: p.maxTime, sigtermTime: p.sigterm,
		interrupt: p.interrupt, display: p.argvRepr,
		signal: func(sig syscall.Signal) { signalGroup(cmd.Process, sig) },
		report: func(msg string) { j.out.header("%s", msg) }}
	killed := sup.watch(ctx, activity, j.interrupted, j.why, exited)
	close(stop)
	wg.Wait()
	j.out.endStreams()
	rc := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		j.out.header("process killed by signal %d\n", int(ws.Signal()))
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

func (p *process) headers(out *output) {
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
	if p.usePTY {
		out.header(" WARNING: this slave does not support usePTY; using pipes\n")
	}
	out.header(" using PTY: False\n")
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

// signalGroup sends sig to the process's group, or to the process alone if
// the group is gone.
func signalGroup(p *os.Process, sig syscall.Signal) {
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		_ = p.Signal(sig) // it may have exited already; Wait reports that
	}
}

// lookPath finds name in the PATH of the child's environment env, as
// execvp would; a name with a slash is used as it is.
func lookPath(name string, env []string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range filepath.SplitList(envMap(env)["PATH"]) {
		if dir == "" {
			dir = "."
		}
		f := filepath.Join(dir, name)
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return f
		}
	}
	return name // Start reports it as not found
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// ping tells a supervisor there was output, without ever blocking.
func ping(activity chan<- struct{}) {
	select {
	case activity <- struct{}{}:
	default:
	}
}
