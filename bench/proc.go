package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/buildslave/buildslave/internal/procgroup"
)

// children are the processes the bench started, each in its own process
// group; killAll ends every group that is still running.
var children struct {
	sync.Mutex
	procs map[*proc]bool
}

// proc is a child process in a process group of its own.
type proc struct {
	cmd   *exec.Cmd
	group *procgroup.Group
	done  chan struct{}
	err   error
}

// startProc starts argv with env (nil: a minimal environment) in its own
// process group, its stdout and stderr appended to logPath unless the
// caller took stdout.
func startProc(argv, env []string, logPath string, setup func(*exec.Cmd) error) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	if env == nil {
		env = minimalEnv(os.TempDir())
	}
	cmd.Env = env
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd.Stderr = log
	if setup != nil {
		if err := setup(cmd); err != nil {
			return nil, err
		}
	}
	if cmd.Stdout == nil {
		cmd.Stdout = log
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	children.Lock()
	defer children.Unlock()
	g, err := procgroup.Start(cmd)
	if err != nil {
		return nil, err
	}
	p.group = g
	if children.procs == nil {
		children.procs = map[*proc]bool{}
	}
	children.procs[p] = true
	go func() {
		p.err = cmd.Wait()
		g.Close()
		children.Lock()
		delete(children.procs, p)
		children.Unlock()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to p's process group and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	p.group.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	p.group.Signal(syscall.SIGKILL) // anything left in the group
	<-p.done
}

// killAll kills every child process group still running.
func killAll() {
	children.Lock()
	defer children.Unlock()
	for p := range children.procs {
		p.group.Signal(syscall.SIGKILL)
	}
}

func minimalEnv(home string) []string {
	return []string{"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8"}
}

// run runs argv with env to completion within timeout, in its own process
// group, and returns its combined output.
func run(ctx context.Context, timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	g, err := procgroup.Start(cmd)
	if err == nil {
		stop := context.AfterFunc(ctx, func() { g.Signal(syscall.SIGKILL) })
		err = cmd.Wait()
		stop()
		g.Close()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out.Bytes())
	}
	return out.String(), nil
}

// loadgen is a running load generator (internal/loadslave).
type loadgen struct {
	p     *proc
	in    io.WriteCloser
	lines chan string
}

func startLoadgen(bin, logPath, password string, args ...string) (*loadgen, error) {
	env := append(minimalEnv(os.TempDir()), "LOADSLAVE_PASSWORD="+password)
	lg := &loadgen{lines: make(chan string, 16)}
	p, err := startProc(append([]string{bin}, args...), env, logPath, func(cmd *exec.Cmd) error {
		var err error
		if lg.in, err = cmd.StdinPipe(); err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lg.lines <- sc.Text()
			}
			close(lg.lines)
		}()
		return nil
	})
	if err != nil {
		return nil, err
	}
	lg.p = p
	if _, err := lg.expect(context.Background(), time.Minute, "ready"); err != nil {
		lg.close()
		return nil, err
	}
	return lg, nil
}

// expect waits for a line starting with word and returns its other fields.
func (lg *loadgen) expect(ctx context.Context, timeout time.Duration, word string) ([]string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-lg.lines:
			if !ok {
				return nil, fmt.Errorf("load generator exited while waiting for %q", word)
			}
			if f := strings.Fields(l); len(f) > 0 && f[0] == word {
				return f[1:], nil
			}
		case <-t.C:
			return nil, fmt.Errorf("load generator: no %q within %v", word, timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (lg *loadgen) send(line string) error {
	_, err := io.WriteString(lg.in, line+"\n")
	return err
}

// count asks for the number of shell commands run so far.
func (lg *loadgen) count(ctx context.Context) (int, error) {
	if err := lg.send("count"); err != nil {
		return 0, err
	}
	f, err := lg.expect(ctx, 30*time.Second, "count")
	if err != nil {
		return 0, err
	}
	if len(f) != 1 {
		return 0, errors.New("load generator: bad count line")
	}
	return strconv.Atoi(f[0])
}

// close closes its stdin (it drops its connections and exits), killing it
// after 30 s.
func (lg *loadgen) close() {
	lg.in.Close()
	select {
	case <-lg.p.done:
	case <-time.After(30 * time.Second):
		lg.p.stop(time.Second)
	}
}

// rssKB is VmRSS of pid, in kB.
func rssKB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no VmRSS")
}

// cpuSeconds is the user+system CPU time pid has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 (state) on
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14
	st, _ := strconv.ParseFloat(f[12], 64) // field 15
	return (ut + st) / 100, nil            // USER_HZ is 100 on Linux
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func killPID(pid int) {
	syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// stockStops are the stock masters not yet stopped, for the signal handler.
var stockStops struct {
	sync.Mutex
	m map[*stockMaster]bool
}

func registerStop(m *stockMaster) {
	stockStops.Lock()
	defer stockStops.Unlock()
	if stockStops.m == nil {
		stockStops.m = map[*stockMaster]bool{}
	}
	stockStops.m[m] = true
}

func unregisterStop(m *stockMaster) {
	stockStops.Lock()
	defer stockStops.Unlock()
	delete(stockStops.m, m)
}

// stopAllStock stops every stock master still registered.
func stopAllStock() {
	stockStops.Lock()
	ms := make([]*stockMaster, 0, len(stockStops.m))
	for m := range stockStops.m {
		ms = append(ms, m)
	}
	stockStops.Unlock()
	for _, m := range ms {
		m.Stop()
	}
}
