package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client/mastertest"
)

const password = "s3cret-pw"

// buildSlave builds this program statically, as it ships.
func buildSlave(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "slave")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// session is one run of the slave binary against a test master.
type session struct {
	cmd     *exec.Cmd
	log     *bytes.Buffer
	conn    *mastertest.Conn
	basedir string
	attach  time.Duration // from exec to the answer to get_worker_info
}

// startBinary runs bin with its configuration in the environment, its
// masters (BUILDSLAVE_MASTER) those named by master, and waits until m,
// one of them, has its info.
func startBinary(tb testing.TB, bin, master string, m *mastertest.Master) *session {
	tb.Helper()
	s := &session{log: &bytes.Buffer{}, basedir: tb.TempDir()}
	s.cmd = exec.Command(bin)
	s.cmd.Env = []string{"PATH=/usr/bin:/bin", "BUILDSLAVE_MASTER=" + master, "BUILDSLAVE_PROTOCOL=msgpack", "BUILDSLAVE_NAME=bot",
		"BUILDSLAVE_PASSWORD=" + password, "BUILDSLAVE_BASEDIR=" + s.basedir}
	s.cmd.Stderr = s.log
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	s.conn = m.Next(tb)
	s.conn.Call(tb, "get_worker_info", nil)
	s.attach = time.Since(start)
	return s
}

// rssKB reads a VmRSS-style field of the process's status, in kB.
func (s *session) status(tb testing.TB, field string) int {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				tb.Fatal(err)
			}
			return kb
		}
	}
	tb.Fatalf("no %s in status", field)
	return 0
}

// shutdown asks the slave to shut down and checks it exits with 0.
func (s *session) shutdown(tb testing.TB) {
	tb.Helper()
	s.conn.Call(tb, "shutdown", nil)
	if err := s.cmd.Wait(); err != nil {
		tb.Fatalf("slave exited with %v\n%s", err, s.log)
	}
}

func TestBinaryAttachesRunsAndShutsDown(t *testing.T) {
	m := mastertest.New(t, "bot", password, false)
	s := startBinary(t, buildSlave(t), m.Addr(), m)
	s.conn.Attach(t, s.basedir)
	run := s.conn.Command(t, "env", "shell", map[string]any{"workdir": s.basedir, "command": "env; echo done"})
	if run.RC != 0 || !strings.Contains(run.Stream("stdout"), "done\n") {
		t.Fatalf("rc %d stdout %q", run.RC, run.Stream("stdout"))
	}
	if strings.Contains(run.Stream("stdout"), password) {
		t.Error("the build's environment holds the password")
	}
	// 20 MB of output must flow through without piling up in memory
	run = s.conn.Command(t, "flood", "shell", map[string]any{"workdir": s.basedir,
		"command": "head -c 20000000 /dev/zero | tr '\\0' x | fold -w 99"})
	if run.RC != 0 || len(run.Stream("stdout")) != 20000000+20000000/99+1 {
		t.Fatalf("flood: rc %d, %d bytes of stdout", run.RC, len(run.Stream("stdout")))
	}
	hwm := s.status(t, "VmHWM")
	s.shutdown(t)
	if strings.Contains(s.log.String(), password) {
		t.Errorf("the log shows the password:\n%s", s.log)
	}
	t.Logf("attached in %v; peak RSS %d kB", s.attach, hwm)
	if hwm > 10*1024 {
		t.Errorf("peak RSS %d kB, want at most 10 MB", hwm)
	}
}

// TestBinaryMovesToTheNextMaster: given an unreachable master and two
// test masters in BUILDSLAVE_MASTER, the slave attaches to the first that
// answers, and when that one goes away, to the next.
func TestBinaryMovesToTheNextMaster(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // every dial there is refused
	one, two := mastertest.New(t, "bot", password, false), mastertest.New(t, "bot", password, false)
	s := startBinary(t, buildSlave(t), dead+","+one.Addr()+","+two.Addr(), one)
	s.conn.Attach(t, s.basedir)
	lost := time.Now()
	one.Close()
	s.conn = two.Next(t)
	s.conn.Attach(t, s.basedir)
	t.Logf("attached to the next master %v after the first went away (back-off: 1 s, drawn from its upper half)", time.Since(lost))
	if run := s.conn.Command(t, "echo", "shell", map[string]any{"workdir": s.basedir, "command": "echo on-the-second"}); run.Stream("stdout") != "on-the-second\n" {
		t.Errorf("on the second master: rc %d stdout %q", run.RC, run.Stream("stdout"))
	}
	s.shutdown(t)
}

func TestBinaryGivesUpWhenRefused(t *testing.T) {
	m := mastertest.New(t, "bot", "another password", false)
	cmd := exec.Command(buildSlave(t), "-master", m.Addr(), "-protocol", "msgpack", "-name", "bot", "-basedir", t.TempDir(), "-max-refusals", "2")
	cmd.Env = []string{"BUILDSLAVE_PASSWORD=" + password}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("exit %v, want status 3\n%s", err, out)
	}
	if m.Refusals() != 2 || strings.Contains(string(out), password) {
		t.Errorf("%d refusals; output:\n%s", m.Refusals(), out)
	}
}

// TestBinaryStopsOnSIGTERMDuringSilentHandshake: SIGTERM while a master
// that accepted the connection never answers the upgrade ends the slave at
// once, with status 0 (it took 28 s).
func TestBinaryStopsOnSIGTERMDuringSilentHandshake(t *testing.T) {
	bin := buildSlave(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	cmd := exec.Command(bin, "-master", l.Addr().String(), "-protocol", "msgpack", "-name", "bot", "-basedir", t.TempDir())
	cmd.Env = []string{"BUILDSLAVE_PASSWORD=" + password}
	out := &bytes.Buffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	select {
	case c := <-accepted:
		defer c.Close()
	case <-deadline:
		cmd.Process.Kill()
		t.Fatalf("the slave did not connect within 10 s\n%s", <-exited)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("slave exited with %v\n%s", err, out)
		}
	case <-deadline:
		cmd.Process.Kill()
		<-exited
		t.Fatalf("the slave did not exit within 10 s of SIGTERM\n%s", out)
	}
}

// BenchmarkAttach starts the static binary against a test master and
// reports the time from exec to the master holding the slave's info, and
// the process's resident memory after the attach sequence and one command.
func BenchmarkAttach(b *testing.B) {
	bin := buildSlave(b)
	m := mastertest.New(b, "bot", password, false)
	var attach time.Duration
	var rss, hwm int
	for b.Loop() {
		s := startBinary(b, bin, m.Addr(), m)
		s.conn.Attach(b, s.basedir)
		s.conn.Command(b, "echo", "shell", map[string]any{"workdir": s.basedir, "command": "echo hello"})
		attach += s.attach
		rss += s.status(b, "VmRSS")
		hwm = max(hwm, s.status(b, "VmHWM"))
		s.shutdown(b)
	}
	b.ReportMetric(float64(attach.Microseconds())/1000/float64(b.N), "ms-to-attach")
	b.ReportMetric(float64(rss)/float64(b.N), "RSS-kB")
	b.ReportMetric(float64(hwm), "peak-RSS-kB")
}
