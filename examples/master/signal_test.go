package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
)

// startChild runs the master as a child process with args; the test
// waits for it, and kills it if it still runs when the test ends.
func startChild(t *testing.T, args ...string) (cmd *exec.Cmd, stdout, stderr *testlog.Buffer) {
	t.Helper()
	cmd = exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunMaster+"=1")
	stdout, stderr = &testlog.Buffer{}, &testlog.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, stdout, stderr
}

// TestSignals runs the master as a child process: SIGHUP adds a slave from
// the edited file, SIGINT shuts it down with exit status 0.
func TestSignals(t *testing.T) {
	const cfg = `
[master]
listen = "127.0.0.1:0"
listen_msgpack = "127.0.0.1:0"
http = "127.0.0.1:0"
[[slaves]]
name = "s1"
password = "pw1"
`
	path := writeFile(t, cfg)
	cmd, out, errs := startChild(t, "-config", path)
	eventually(t, 10*time.Second, "the master started", func() bool { return strings.Contains(out.String(), "status page") })

	if err := os.WriteFile(path, []byte(cfg+"[[slaves]]\nname = \"s2\"\npassword = \"pw2\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "reconfigured", func() bool { return strings.Contains(out.String(), "reconfigured: "+path+": 2 slaves") })

	os.WriteFile(path, []byte(cfg+"[[slaves]]\nname = \"s2\"\nmax_builds = -1\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "refused", func() bool { return strings.Contains(out.String(), "reconfiguration refused") })

	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errs.String())
	}
	if !strings.Contains(errs.String(), "max_builds: must not be negative") || !strings.Contains(out.String(), "==> stopped") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out.String(), errs.String())
	}
}

// TestSIGTERMCancelsQueuedBuilds: a build queued for a slave that never
// attaches does not hold SIGTERM's drain until -drain-timeout.
func TestSIGTERMCancelsQueuedBuilds(t *testing.T) {
	path := writeFile(t, `
[master]
listen = "127.0.0.1:0"
listen_msgpack = "127.0.0.1:0"
http = "127.0.0.1:0"
basedir = "`+t.TempDir()+`"
[[slaves]]
name = "offline"
password = "pw"
[[builders]]
name = "b"
slaves = ["offline"]
  [[builders.steps]]
  shell = "true"
[[schedulers]]
builder = "b"
at_start = true
`)
	cmd, out, _ := startChild(t, "-config", path, "-drain-timeout", "59s")
	eventually(t, 10*time.Second, "the master started", func() bool { return strings.Contains(out.String(), "status page") })
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still draining 20 s after SIGTERM with one queued build:\n%s", out.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("exited %v after SIGTERM", d)
	}
	if !strings.Contains(out.String(), "b #1: cancelled") {
		t.Errorf("stdout lacks the cancelled build:\n%s", out.String())
	}
}
