// Package integration is the shared plumbing of tests that run real peers, such as the stock Debian buildbot-worker.
package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// EnvVar names the environment variable that makes integration tests
// mandatory: with it set to 1, a missing program fails the test instead of
// skipping it.
const EnvVar = "BUILDSLAVE_INTEGRATION"

// Require returns the path of program, or skips t with a message saying
// what to install when it is missing; when EnvVar is 1 it fails t instead.
func Require(t testing.TB, program string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	msg := program + " is not installed (apt-get install -y --no-install-recommends " + program + "): " + err.Error()
	if os.Getenv(EnvVar) == "1" {
		t.Fatalf("%s=1 but %s", EnvVar, msg)
	}
	t.Skip("skipping integration test: " + msg)
	return ""
}

// Worker is a stock buildbot-worker in a directory of its own, run with a
// minimal environment so that its logs hold nothing of the test's.
type Worker struct {
	t   testing.TB
	Dir string // the worker's base directory
	bin string
}

// NewWorker creates a worker that connects with the msgpack protocol to
// the master at addr (host:port) as name with password. It requires
// buildbot-worker, and stops the worker when the test ends.
func NewWorker(t testing.TB, addr, name, password string) *Worker {
	t.Helper()
	return newWorker(t, addr, name, password, "--protocol=msgpack_experimental_v7")
}

// NewPBWorker creates a worker as create-worker does by default, on
// Perspective Broker; flags are more create-worker flags, such as
// --keepalive=N.
func NewPBWorker(t testing.TB, addr, name, password string, flags ...string) *Worker {
	t.Helper()
	return newWorker(t, addr, name, password, flags...)
}

func newWorker(t testing.TB, addr, name, password string, flags ...string) *Worker {
	t.Helper()
	w := &Worker{t: t, Dir: filepath.Join(t.TempDir(), name), bin: Require(t, "buildbot-worker")}
	w.run(append(append([]string{"create-worker"}, flags...), w.Dir, addr, name, password)...)
	t.Cleanup(w.Stop)
	return w
}

func (w *Worker) run(args ...string) {
	w.t.Helper()
	cmd := exec.Command(w.bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + filepath.Dir(w.Dir), "LANG=C.UTF-8"}
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("buildbot-worker %v: %v\n%s", args, err, out)
	}
}

// Start starts the worker daemon without waiting for it to attach; it
// connects, and retries, on its own.
func (w *Worker) Start() {
	w.t.Helper()
	w.run("start", "--quiet", w.Dir)
}

// Stop stops the worker daemon if it runs.
func (w *Worker) Stop() {
	w.t.Helper()
	if _, err := os.Stat(filepath.Join(w.Dir, "twistd.pid")); err != nil {
		return
	}
	w.run("stop", w.Dir)
}

// Log returns the worker's twistd.log.
func (w *Worker) Log() string {
	b, _ := os.ReadFile(filepath.Join(w.Dir, "twistd.log"))
	return string(b)
}

// WaitLog polls the worker's log until it contains substr or timeout
// passes, and reports whether it did.
func (w *Worker) WaitLog(substr string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if bytes.Contains([]byte(w.Log()), []byte(substr)) {
			return true
		}
	}
	return false
}

// WaitExit polls until the worker daemon has exited (its twistd.pid is
// gone) or timeout passes, and reports whether it did.
func (w *Worker) WaitExit(timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(w.Dir, "twistd.pid")); os.IsNotExist(err) {
			return true
		}
	}
	return false
}
