//go:build unix

package local_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/local"
	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// The test binary doubles as the slave program when helperEnv is set: it
// dials the master, logs in with the name and password of its
// environment and answers a line protocol (PING, RUN, SHUTDOWN). The Go
// slave of examples/slave and the msgpack protocol replace it once they
// exist.
const helperEnv = "LOCAL_TEST_SLAVE"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "exit":
		os.Exit(3)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(time.Hour)
	case "tree":
		os.Exit(helperTree())
	case "sleep":
		time.Sleep(time.Hour)
	default:
		os.Exit(helperSlave())
	}
}

func helperSlave() int {
	master := flag.String("master", "", "host:port")
	name := flag.String("name", "", "slave name")
	flag.String("basedir", "", "base directory")
	flag.Parse()
	if *master != os.Getenv(local.EnvMaster) || *name != os.Getenv(local.EnvName) {
		fmt.Fprintln(os.Stderr, "flags and environment disagree")
		return 2
	}
	c, err := net.Dial("tcp", *master)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(c, "LOGIN %s %s\n", *name, os.Getenv(local.EnvPassword))
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		verb, rest, _ := strings.Cut(sc.Text(), " ")
		id, arg, _ := strings.Cut(rest, " ")
		switch verb {
		case "PING":
			fmt.Fprintf(c, "OK %s\n", id)
		case "RUN":
			out, _ := exec.Command("sh", "-c", arg).Output()
			fmt.Fprintf(c, "OK %s %s\n", id, strings.TrimSpace(string(out)))
		case "SHUTDOWN":
			fmt.Fprintf(c, "OK %s\n", id)
			return 0
		}
	}
	return 0
}

// helperTree is a slave that runs a build command in a process group of
// its own, as the Go slave does: it records its pid and the command's in
// its basedir, then waits.
func helperTree() int {
	basedir := os.Getenv(local.EnvBasedir)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=sleep")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pids := fmt.Sprintf("%d %d", os.Getpid(), cmd.Process.Pid)
	tmp := filepath.Join(basedir, "pids.tmp")
	if err := os.WriteFile(tmp, []byte(pids), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Rename(tmp, filepath.Join(basedir, "pids")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = cmd.Wait()
	return 0
}

// lineConn is the master's side of the helper's line protocol, a
// slave.Conn.
type lineConn struct {
	c      net.Conn
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	next    int
	pending map[string]chan string
}

func newLineConn(c net.Conn, r *bufio.Reader) *lineConn {
	ctx, cancel := context.WithCancelCause(context.Background())
	lc := &lineConn{c: c, ctx: ctx, cancel: cancel, pending: make(map[string]chan string)}
	go func() { // ends when the connection does
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				cancel(fmt.Errorf("connection lost: %w", err))
				c.Close()
				return
			}
			_, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
			id, arg, _ := strings.Cut(rest, " ")
			lc.mu.Lock()
			ch := lc.pending[id]
			delete(lc.pending, id)
			lc.mu.Unlock()
			if ch != nil {
				ch <- arg
			}
		}
	}()
	return lc
}

func (lc *lineConn) call(ctx context.Context, verb, arg string) (string, error) {
	ch := make(chan string, 1)
	lc.mu.Lock()
	lc.next++
	id := strconv.Itoa(lc.next)
	lc.pending[id] = ch
	lc.mu.Unlock()
	if _, err := fmt.Fprintf(lc.c, "%s %s %s\n", verb, id, arg); err != nil {
		return "", err
	}
	select {
	case out := <-ch:
		return out, nil
	case <-ctx.Done():
		return "", context.Cause(ctx)
	case <-lc.ctx.Done():
		return "", context.Cause(lc.ctx)
	}
}

func (lc *lineConn) Context() context.Context { return lc.ctx }
func (lc *lineConn) Keepalive(ctx context.Context) error {
	_, err := lc.call(ctx, "PING", "")
	return err
}
func (lc *lineConn) Print(ctx context.Context, msg string) error {
	_, err := lc.call(ctx, "PING", "")
	return err
}
func (lc *lineConn) RequestShutdown(ctx context.Context) error {
	_, err := lc.call(ctx, "SHUTDOWN", "")
	return err
}
func (lc *lineConn) Close() error {
	lc.cancel(errors.New("closed by the master"))
	return lc.c.Close()
}
func (lc *lineConn) Info() slave.Info   { return slave.Info{Admin: "local test"} }
func (lc *lineConn) RemoteAddr() string { return lc.c.RemoteAddr().String() }

// serve accepts helper slaves on a loopback port for m until the test ends.
func serve(t *testing.T, m *slave.Manager) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			f := strings.Fields(line)
			if err != nil || len(f) != 3 || f[0] != "LOGIN" || m.Authenticate(f[1], f[2], c.RemoteAddr().String()) != nil {
				c.Close()
				continue
			}
			if err := m.Attach(context.Background(), f[1], newLineConn(c, r)); err != nil {
				c.Close()
			}
		}
	})
	return ln.Addr().String()
}

func newSlave(t *testing.T) *slave.Slave {
	t.Helper()
	s, err := slave.New("local-bot", "configured", slave.MissingTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newDriver runs the test binary as s's program in mode.
func newDriver(t *testing.T, s *slave.Slave, master, mode string, wait time.Duration) *local.Driver {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d, err := local.New(local.Config{
		Slave:            s,
		BuildWaitTimeout: wait,
		Program:          exe,
		Master:           master,
		Basedir:          t.TempDir(),
		Env:              []string{helperEnv + "=" + mode},
		Output:           os.Stderr,
		KillTimeout:      time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestBuildOnALocalLatentSlave(t *testing.T) {
	s := newSlave(t)
	m, err := slave.NewManager(slave.Config{}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d := newDriver(t, s, serve(t, m), "slave", 300*time.Millisecond)
	lc, err := latent.New(m, latent.Config{MasterID: "local-test", CheckInterval: 50 * time.Millisecond}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, "local-bot")
	if err != nil {
		t.Fatal(err)
	}
	inst := mustStatus(t, lc).Instance
	pid, _ := strconv.Atoi(inst.ID)
	out, err := b.Conn().(*lineConn).call(ctx, "RUN", "echo hello from $BUILDSLAVE_NAME")
	if err != nil || out != "hello from local-bot" {
		t.Fatalf("command = %q, %v", out, err)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if !strings.Contains(string(environ), local.EnvPassword+"=") || strings.Contains(string(cmdline), "PASSWORD") || strings.Count(string(cmdline), "\x00") < 6 {
		t.Errorf("password not only in the environment: cmdline %q", cmdline)
	}
	if list, _ := d.List(ctx, "local-test"); len(list) != 1 || list[0].ID != inst.ID {
		t.Errorf("List = %v", list)
	}
	b.Release()
	eventually(t, "the instance stopped after build_wait_timeout", func() bool { return mustStatus(t, lc).State == latent.Stopped })
	if alive(pid) {
		t.Errorf("process %d still alive", pid)
	}
	if st, _ := m.State("local-bot"); st.Attached {
		t.Error("still attached")
	}
	if list, _ := d.List(ctx, "local-test"); len(list) != 0 {
		t.Errorf("List after stop = %v", list)
	}
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func mustStatus(t *testing.T, lc *latent.Lifecycle) latent.Status {
	t.Helper()
	st, ok := lc.Status("local-bot")
	if !ok {
		t.Fatal("no status")
	}
	return st
}

func TestCheckReportsTheExitStatus(t *testing.T) {
	d := newDriver(t, newSlave(t), "127.0.0.1:1", "exit", 0)
	m, err := slave.NewManager(slave.Config{}, d.Slave())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lc, err := latent.New(m, latent.Config{MasterID: "local-test", CheckInterval: 50 * time.Millisecond}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	err = lc.Substantiate(t.Context(), "local-bot")
	if !errors.Is(err, latent.ErrDied) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Substantiate = %v, want ErrDied with exit status 3", err)
	}
}

func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	d := newDriver(t, newSlave(t), "127.0.0.1:1", "ignore-term", 0)
	inst, err := d.Start(t.Context(), latent.StartRequest{Name: "local-bot", Password: "pw", MasterID: "local-test"})
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(inst.ID)
	time.Sleep(200 * time.Millisecond) // let it install its signal handler
	if err := d.Check(t.Context(), inst); err != nil {
		t.Fatalf("Check of a running process = %v", err)
	}
	start := time.Now()
	if err := d.Stop(t.Context(), inst); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("Stop took %v: SIGKILL came before KillTimeout", took)
	}
	if alive(pid) {
		t.Errorf("process %d survived Stop", pid)
	}
	if err := d.Stop(t.Context(), inst); err != nil {
		t.Errorf("second Stop = %v", err)
	}
}

func TestNewRequiresTheEssentials(t *testing.T) {
	_, err := local.New(local.Config{})
	for _, field := range []string{"Slave", "Program", "Master", "Basedir"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("New({}) = %v, want %s named", err, field)
		}
	}
}

// TestBuildWithTheGoSlave runs examples/slave as the local latent slave
// against the msgpack protocol's Handler on loopback.
func TestBuildWithTheGoSlave(t *testing.T) {
	if testing.Short() {
		t.Skip("builds examples/slave")
	}
	bin := filepath.Join(t.TempDir(), "slave")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/buildslave/buildslave/examples/slave").CombinedOutput(); err != nil {
		t.Fatalf("go build examples/slave: %v\n%s", err, out)
	}
	s := newSlave(t)
	m, err := slave.NewManager(slave.Config{}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: &protocol.Handler{Manager: m}}
	go srv.Serve(ln)
	defer srv.Close()
	basedir := t.TempDir()
	d, err := local.New(local.Config{Slave: s, BuildWaitTimeout: 300 * time.Millisecond, Program: bin,
		Args: []string{"-protocol", "msgpack"}, Master: ln.Addr().String(), Basedir: basedir, Output: os.Stderr, KillTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lc, err := latent.New(m, latent.Config{MasterID: "local-test", CheckInterval: 100 * time.Millisecond}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, "local-bot")
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := b.Conn().(*protocol.Conn).Start(ctx, remote.Request{Name: "shell", Args: map[string]any{
		"workdir": basedir, "command": []any{"echo", "hello"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	for u := range cmd.Updates() {
		if u.Key == "stdout" {
			stdout.WriteString(u.Text)
		}
	}
	if err := cmd.Wait(ctx); err != nil || strings.TrimSpace(stdout.String()) != "hello" {
		t.Fatalf("shell = %q, %v", stdout.String(), err)
	}
	pid, _ := strconv.Atoi(mustStatus(t, lc).Instance.ID)
	b.Release()
	eventually(t, "the instance stopped after build_wait_timeout", func() bool { return mustStatus(t, lc).State == latent.Stopped })
	if alive(pid) {
		t.Errorf("slave process %d still alive", pid)
	}
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// running reports whether pid runs: on Linux a zombie, which an init
// that does not reap may keep, does not count.
func running(pid int) bool {
	if runtime.GOOS != "linux" {
		return alive(pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// TestOrphansOfAKilledMasterAreReaped starts a slave through a wrapper
// shell that forks it, and the slave a command in a process group of its
// own; then the master is gone without stopping anything, as after kill
// -9. A restarted master with the same id finds the instance by its tag,
// refuses to start a second slave on the basedir, and its reaper stops the
// whole tree; a master with another id never sees it.
func TestOrphansOfAKilledMasterAreReaped(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s := newSlave(t)
	basedir := t.TempDir()
	wrapped := func() *local.Driver {
		d, err := local.New(local.Config{
			Slave:       s,
			Program:     "sh",
			Args:        []string{"-c", `"$0" "$@"; exit $?`, exe}, // forks the slave and waits
			Master:      "127.0.0.1:1",
			Basedir:     basedir,
			Env:         []string{helperEnv + "=tree"},
			Output:      os.Stderr,
			KillTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	const masterID = "master-killed"
	req := latent.StartRequest{Name: "local-bot", Password: "pw", MasterID: masterID}
	inst, err := wrapped().Start(t.Context(), req) // its master never stops it
	if err != nil {
		t.Fatal(err)
	}
	pids := started(t, basedir, inst)
	for _, pid := range pids {
		if !running(pid) {
			t.Fatalf("process %d of the orphan is not running", pid)
		}
	}

	d := wrapped() // the restarted master's
	_, err = d.Start(t.Context(), req)
	if !errors.Is(err, local.ErrBasedirInUse) || !strings.Contains(err.Error(), "process group "+inst.ID) || !strings.Contains(err.Error(), masterID) {
		t.Fatalf("Start on a basedir in use = %v, want ErrBasedirInUse naming process group %s and %s", err, inst.ID, masterID)
	}
	if list, err := d.List(t.Context(), "another-master"); err != nil || len(list) != 0 {
		t.Fatalf("another master lists %v, %v", list, err)
	}
	if err := d.Stop(t.Context(), latent.Instance{ID: inst.ID, Slave: "local-bot", MasterID: "another-master"}); err != nil || !running(pids[0]) {
		t.Fatalf("Stop with another master's id = %v, running %v: it must not touch the orphan", err, running(pids[0]))
	}
	list, err := d.List(t.Context(), masterID)
	if err != nil || len(list) != 1 || list[0].ID != inst.ID || list[0].Slave != "local-bot" || list[0].MasterID != masterID {
		t.Fatalf("List = %v, %v; want the orphan %s", list, err, inst.ID)
	}

	m, err := slave.NewManager(slave.Config{}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var reaped []string
	lc, err := latent.New(m, latent.Config{MasterID: masterID, ReapInterval: -1, Observe: func(ev latent.Event) {
		if ev.Reaped {
			reaped = append(reaped, ev.Instance)
		}
	}}, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if len(reaped) != 1 || reaped[0] != inst.ID { // New reaps before it returns
		t.Fatalf("reaped %v, want %s", reaped, inst.ID)
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("process %d of the orphan survived the reaper", pid)
		}
	}
	if list, err := d.List(t.Context(), masterID); err != nil || len(list) != 0 {
		t.Errorf("List after the reap = %v, %v", list, err)
	}
	if err := os.Remove(filepath.Join(basedir, "pids")); err != nil {
		t.Fatal(err)
	}
	next, err := d.Start(t.Context(), req)
	if err != nil {
		t.Fatalf("Start once the orphan is gone: %v", err)
	}
	pids = started(t, basedir, next) // Stop before the command started could leave it to the next reap
	if err := d.Stop(t.Context(), next); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("process %d survived Stop", pid)
		}
	}
}

// started waits for the tree of a "tree" helper started through a wrapper
// shell, and returns the pids Stop must end: the shell's, the slave's and,
// on Linux, which finds the command's own process group by its tag, the
// command's. If the test fails, its cleanup kills those it started.
func started(t *testing.T, basedir string, inst latent.Instance) []int {
	t.Helper()
	var pids []int
	eventually(t, "the slave and its command started", func() bool {
		b, _ := os.ReadFile(filepath.Join(basedir, "pids"))
		var slavePID, cmdPID int
		if n, _ := fmt.Sscan(string(b), &slavePID, &cmdPID); n != 2 {
			return false
		}
		shPID, _ := strconv.Atoi(inst.ID)
		pids = []int{shPID, slavePID, cmdPID}
		return true
	})
	t.Cleanup(func() {
		for _, pid := range pids {
			if t.Failed() && running(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if runtime.GOOS != "linux" {
		return pids[:2]
	}
	return pids
}

// A local slave keeps an idle process for the default build_wait_timeout
// unless told otherwise, like every latent slave.
func TestBuildWaitTimeoutDefaults(t *testing.T) {
	for _, tc := range []struct {
		wait time.Duration
		stop bool
		want time.Duration
	}{
		{0, false, latent.DefaultBuildWaitTimeout},
		{time.Minute, false, time.Minute},
		{-1, false, -1},
		{time.Minute, true, 0},
	} {
		d, err := local.New(local.Config{Slave: newSlave(t), BuildWaitTimeout: tc.wait, StopAfterEachBuild: tc.stop,
			Program: "/bin/true", Master: "127.0.0.1:1", Basedir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if got := d.BuildWaitTimeout(); got != tc.want {
			t.Errorf("BuildWaitTimeout %v, StopAfterEachBuild %v: got %v, want %v", tc.wait, tc.stop, got, tc.want)
		}
	}
}
