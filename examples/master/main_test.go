package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client/slavecmd"
	"github.com/buildslave/buildslave/internal/testlog"
)

// envRunMaster makes the test binary run as the master, for the tests that
// signal a child process.
const envRunMaster = "EXAMPLE_MASTER_TEST_RUN"

// TestMain lets the test binary be the local latent slaves' program
// ("slave" subcommand), the master of the signal tests and a holder of
// hostile sockets.
func TestMain(m *testing.M) {
	switch {
	case len(os.Args) > 1 && os.Args[1] == "slave":
		os.Exit(slavecmd.Run(os.Args[2:], os.Stderr))
	case os.Getenv(envRunMaster) == "1":
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, nil))
	case os.Getenv(envHoldSockets) != "":
		os.Exit(holdSockets(os.Getenv(envHoldSockets), os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %v: %s", timeout, what)
		}
	}
}

var instanceRE = regexp.MustCompile(`\(instance (\d+)\)`)

// assertProcessesGone checks that no instance process named in the
// progress lines still runs.
func assertProcessesGone(t *testing.T, out string) {
	t.Helper()
	ms := instanceRE.FindAllStringSubmatch(out, -1)
	if len(ms) == 0 {
		t.Errorf("no instance in the progress lines:\n%s", out)
	}
	for _, m := range ms {
		pid, _ := strconv.Atoi(m[1])
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("instance process %d still runs", pid)
		}
	}
}

// TestEmbeddedDefaultOnce runs the embedded default as a newcomer does,
// with -once: the at_start build substantiates a local latent slave (this
// test binary as "master slave"), runs its shell and upload steps, and the
// master exits once build_wait_timeout has stopped the slave.
func TestEmbeddedDefaultOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the default's 15 s build_wait_timeout")
	}
	t.Setenv("TMPDIR", t.TempDir()) // the default's basedir
	var out, errs testlog.Buffer
	start := time.Now()
	code := run(t.Context(), []string{"-once", "-listen", "127.0.0.1:0", "-listen-msgpack", "127.0.0.1:0", "-http", "127.0.0.1:0"}, &out, &errs, nil)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errs.String())
	}
	for _, want := range []string{
		"status page: http://127.0.0.1:",
		"buildbot-worker create-worker /", // no protocol flag: PB
		"go run ./examples/slave -master 127.0.0.1:",
		"latent slave local1: substantiating",
		"hello #1: started on local",
		"hello #1: count | line 3",
		`step "upload": success`,
		"hello #1: success on local",
		"build_wait_timeout (15s) expired",
		"stopped: instance stopped",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, out.String())
		}
	}
	if d := time.Since(start); d < 15*time.Second {
		t.Errorf("exited after %v, before build_wait_timeout", d)
	}
	if strings.Contains(errs.String(), "static1-password") {
		t.Error("a password was logged")
	}
	assertProcessesGone(t, out.String())
}

func TestBadFlagsAndConfigExit2(t *testing.T) {
	bad := writeFile(t, "[[slaves]]\nname = \"a\"\nmax_builds = -1\n[[builders]]\nname = \"b\"\nslaves = [\"nobody\"]\n")
	for _, args := range [][]string{{"-nosuchflag"}, {"extra"}, {"-config", bad}, {"-config", "/nonexistent.toml"}} {
		var out, errs testlog.Buffer
		if code := run(t.Context(), args, &out, &errs, nil); code != 2 {
			t.Errorf("run %q = %d, want 2; stderr:\n%s", args, code, errs.String())
		}
		if args[0] == "-config" && args[1] == bad {
			for _, want := range []string{"not starting", ":3: slaves[0] \"a\": max_builds: must not be negative", ":6: builders[0] \"b\": slaves: \"nobody\" is not a slave", "password: missing"} {
				if !strings.Contains(errs.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, errs.String())
				}
			}
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "master-*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprint(f, content); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return f.Name()
}
