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

// TestSlavesAttachAndRunShell attaches 5 slaves over each protocol, runs a
// shell command on one of them with -exec, and checks that it ran where
// the master said and was counted.
func TestSlavesAttachAndRunShell(t *testing.T) {
	for _, proto := range []string{"msgpack", "pb"} {
		t.Run(proto, func(t *testing.T) {
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
			defer m.Close()
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			url := "ws://" + l.Addr().String() + "/"
			served := make(chan struct{})
			if proto == "pb" {
				url = l.Addr().String()
				srv := &pb.Server{Manager: m, Builders: []string{"b1"}, Logger: log}
				go func() { srv.Serve(l); close(served) }()
				defer func() { srv.Close(); <-served }()
			} else {
				srv := &protocol.Server{Handler: &protocol.Handler{Manager: m, Builders: []string{"b1"}, Logger: log}}
				go func() { srv.Serve(l); close(served) }()
				defer func() { srv.Shutdown(context.Background()); <-served }()
			}

			base := t.TempDir()
			child := exec.Command(os.Args[0], "-protocol", proto, "-url", url, "-n", "5", "-sources", "5", "-exec", "-basedir", base, "-timeout", "1m")
			child.Env = append(os.Environ(), "LOADSLAVE_RUN_MAIN=1", "LOADSLAVE_PASSWORD=pw")
			stdin, _ := child.StdinPipe()
			stdout, _ := child.StdoutPipe()
			child.Stderr = os.Stderr
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			defer child.Wait()
			defer stdin.Close()
			lines := bufio.NewScanner(stdout)
			expect := func(prefix string) {
				t.Helper()
				if !lines.Scan() || !strings.HasPrefix(lines.Text(), prefix) {
					t.Fatalf("loadslave said %q (%v), want %q...", lines.Text(), lines.Err(), prefix)
				}
			}
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

func TestSourceAddr(t *testing.T) {
	for i, want := range map[int]string{0: "127.1.0.1", 253: "127.1.0.254", 254: "127.1.1.1",
		254 * 254: "127.2.0.1", maxSources - 1: "127.254.253.254"} {
		if got := SourceAddr(i).String(); got != want {
			t.Errorf("SourceAddr(%d) = %s, want %s", i, got, want)
		}
	}
}
