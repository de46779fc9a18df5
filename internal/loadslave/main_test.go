package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// TestMain runs the test binary as loadslave itself when asked, so that the
// tests drive the real program through its stdin and stdout.
func TestMain(m *testing.M) {
	if os.Getenv("LOADSLAVE_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testMaster starts a slave manager knowing the slaves s0 to s4 (password
// pw) and a server of proto for it on a free loopback port; it returns the
// manager, the URL to give loadslave, and stop, which drops every
// connection (also called at the test's end).
func testMaster(t *testing.T, proto string) (m *slave.Manager, url string, stop func()) {
	log := slog.New(slog.DiscardHandler)
	var slaves []*slave.Slave
	for _, name := range []string{"s0", "s1", "s2", "s3", "s4"} {
		s, err := slave.New(name, "pw")
		if err != nil {
			t.Fatal(err)
		}
		slaves = append(slaves, s)
	}
	m, err := slave.NewManager(slave.Config{Logger: log}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	url = "ws://" + l.Addr().String() + "/"
	served := make(chan struct{})
	var closeServer func()
	if proto == "pb" {
		url = l.Addr().String()
		srv := &pb.Server{Manager: m, Builders: []string{"b1"}, Logger: log}
		closeServer = func() { srv.Close() }
		go func() { srv.Serve(l); close(served) }()
	} else {
		srv := &protocol.Server{Handler: &protocol.Handler{Manager: m, Builders: []string{"b1"}, Logger: log}}
		closeServer = func() { srv.Shutdown(context.Background()) }
		go func() { srv.Serve(l); close(served) }()
	}
	stop = sync.OnceFunc(func() { closeServer(); <-served; m.Close() })
	t.Cleanup(stop)
	return m, url, stop
}

// startLoadslave runs loadslave with args (and the password pw); it returns
// its stdin and expect, which reads its next line and fails the test unless
// it starts with prefix. Closing stdin ends it; the test waits for it.
func startLoadslave(t *testing.T, args ...string) (stdin io.WriteCloser, expect func(prefix string) string) {
	child := exec.Command(os.Args[0], args...)
	child.Env = append(os.Environ(), "LOADSLAVE_RUN_MAIN=1", "LOADSLAVE_PASSWORD=pw")
	stdin, _ = child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); child.Wait() })
	lines := bufio.NewScanner(stdout)
	return stdin, func(prefix string) string {
		t.Helper()
		if !lines.Scan() || !strings.HasPrefix(lines.Text(), prefix) {
			t.Fatalf("loadslave said %q (%v), want %q...", lines.Text(), lines.Err(), prefix)
		}
		return lines.Text()
	}
}

// TestSlavesAttachAndRunShell attaches 5 slaves over each protocol, runs a
// shell command on one of them with -exec, and checks that it ran where
// the master said and was counted.
func TestSlavesAttachAndRunShell(t *testing.T) {
	for _, proto := range []string{"msgpack", "pb"} {
		t.Run(proto, func(t *testing.T) {
			m, url, _ := testMaster(t, proto)
			base := t.TempDir()
			stdin, expect := startLoadslave(t, "-protocol", proto, "-url", url, "-n", "5", "-sources", "5", "-exec", "-basedir", base, "-timeout", "1m")
			expect("ready")
			io.WriteString(stdin, "go\n")
			expect("attached 5 5 ")
			for _, st := range m.States() {
				if !st.Attached {
					t.Fatalf("%s is not attached", st.Name)
				}
				i, _ := strconv.Atoi(strings.TrimPrefix(st.Name, "s"))
				if host, _, _ := net.SplitHostPort(st.RemoteAddr); host != SourceAddr(i).String() {
					t.Errorf("%s attached from %s, want %s (-sources)", st.Name, st.RemoteAddr, SourceAddr(i))
				}
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			build, err := m.Acquire(ctx, "s3")
			if err != nil {
				t.Fatal(err)
			}
			defer build.Release()
			workdir := filepath.Join(base, "s3", "b1", "build")
			if proto == "pb" {
				workdir = "build" // relative to the builder's directory, as a stock master sends it
			}
			cmd, err := build.Conn().(remote.Commander).Start(ctx, remote.Request{Name: "shell", Builder: "b1",
				Args: map[string]any{"workdir": workdir, "command": "echo hi > out; exit 3"}})
			if err != nil {
				t.Fatal(err)
			}
			rc := -1
			for u := range cmd.Updates() {
				if u.Key == "rc" {
					rc = u.RC
				}
			}
			if err := cmd.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if rc != 3 {
				t.Errorf("rc %d, want 3", rc)
			}
			if b, err := os.ReadFile(filepath.Join(base, "s3", "b1", "build", "out")); err != nil || string(b) != "hi\n" {
				t.Errorf("the command's output file: %q, %v", b, err)
			}
			io.WriteString(stdin, "count\n")
			expect("count 1")
		})
	}
}

// TestFailover: with -failover and two masters, 5 slaves attach to the
// first only; when it drops every connection, all 5 attach to the second
// and loadslave says so, over each protocol.
func TestFailover(t *testing.T) {
	for _, proto := range []string{"msgpack", "pb"} {
		t.Run(proto, func(t *testing.T) {
			m1, url1, stop1 := testMaster(t, proto)
			m2, url2, _ := testMaster(t, proto)
			stdin, expect := startLoadslave(t, "-protocol", proto, "-url", url1+","+url2, "-failover", "-n", "5", "-timeout", "1m")
			expect("ready")
			io.WriteString(stdin, "go\n")
			expect("attached 5 5 ")
			for i, m := range []*slave.Manager{m1, m2} {
				for _, st := range m.States() {
					if st.Attached != (i == 0) {
						t.Fatalf("master %d: %s attached %v before the failover", i+1, st.Name, st.Attached)
					}
				}
			}
			stop1()
			line := expect("reattached 5 5 ")
			if f := strings.Fields(line); len(f) != 5 {
				t.Errorf("%q: want the seconds the re-attaches took and the failures meanwhile", line)
			} else if secs, err := strconv.ParseFloat(f[3], 64); err != nil || secs < 0 {
				t.Errorf("%q: want the seconds the re-attaches took", line)
			}
			for _, st := range m2.States() {
				if !st.Attached {
					t.Errorf("%s is not attached to the second master", st.Name)
				}
			}
		})
	}
}

// TestSeveralMastersNeedFailover: a list of masters without -failover is
// refused, naming -url.
func TestSeveralMastersNeedFailover(t *testing.T) {
	child := exec.Command(os.Args[0], "-url", "127.0.0.1:1,127.0.0.1:2")
	child.Env = append(os.Environ(), "LOADSLAVE_RUN_MAIN=1")
	out, err := child.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-url") || !strings.Contains(string(out), "-failover") {
		t.Errorf("two masters without -failover: %v, %q", err, out)
	}
}

func TestSourceAddr(t *testing.T) {
	for i, want := range map[int]string{0: "127.1.0.1", 253: "127.1.0.254", 254: "127.1.1.1",
		254 * 254: "127.2.0.1", maxSources - 1: "127.254.253.254"} {
		if got := SourceAddr(i).String(); got != want {
			t.Errorf("SourceAddr(%d) = %s, want %s", i, got, want)
		}
	}
}
