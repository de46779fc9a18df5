package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/slave"
)

// faultConfig is master id of a cluster on etcd endpoint, with slaves s1
// and s2 and a builder on s1, as a file for -config.
func faultConfig(t *testing.T, id, endpoint string) string {
	return writeFile(t, fmt.Sprintf(`
[master]
listen = "127.0.0.1:0"
listen_msgpack = "127.0.0.1:0"
http = "127.0.0.1:0"
basedir = %q
master_id = %q
[cluster]
etcd = %q
prefix = "/%s/"
lease_ttl = "2s"
dial_timeout = "1s"
[[slaves]]
name = "s1"
password = "pw1"
[[slaves]]
name = "s2"
password = "pw2"
[[builders]]
name = "on-s1"
slaves = ["s1"]
  [[builders.steps]]
  shell = "echo ran"
`, t.TempDir(), id, endpoint, t.Name()))
}

// loseEtcd runs master a (run, in-process) on etcd at endpoint with s1
// attached, then calls cut: a loses etcd. It checks that a says so once,
// refuses s2 (a new name) with a reason, logging that once, and still runs
// a build on s1. It returns a's log and the channel of run's exit status.
func loseEtcd(t *testing.T, endpoint string, cut func()) (*testlog.Buffer, <-chan int) {
	started := make(chan *master, 1)
	codes := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errs testlog.Buffer
	args := []string{"-config", faultConfig(t, "a", endpoint), "-drain-timeout", "1s"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		codes <- run(ctx, args, &out, &errs, func(m *master) { started <- m })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("the master did not shut down within 20 s")
		}
	})
	var a *master
	select {
	case a = <-started:
	case code := <-codes:
		t.Fatalf("the master exited with status %d:\n%s", code, errs.String())
	}
	attachGoSlave(t, a, "s1", "pw1")
	events, unsubscribe := a.mgr.Subscribe()
	defer unsubscribe()

	cut()
	cutAt := time.Now()
	eventually(t, 30*time.Second, "a says its lease ended", func() bool { return strings.Contains(errs.String(), "lease ended") })
	t.Logf("a's lease ended %v after the cut (TTL 2 s)", time.Since(cutAt).Round(100*time.Millisecond))

	runGoSlave(t, client.Config{Master: a.protoAddr, Protocol: client.Msgpack, Name: "s2", Password: "pw2"})
	for refused := 0; refused < 2; { // the slave tries again after its back-off
		select {
		case ev := <-events:
			if ev.Kind == slave.Refused && ev.Slave == "s2" {
				if !errors.Is(ev.Err, slave.ErrUnclaimed) {
					t.Fatalf("s2 refused with %v, want ErrUnclaimed", ev.Err)
				}
				refused++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("s2 not refused twice within 30 s\n%s", errs.String())
		}
	}
	if st, _ := a.mgr.State("s2"); st.Attached {
		t.Fatal("s2 attached to a master cut from etcd")
	}

	h, err := a.runner.ForceOn("on-s1", "while etcd is away", []string{"s1"})
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if b := a.history.Recent(1); len(b) != 1 || b[0].State != builds.Success {
		t.Fatalf("the build on s1, held by a, while etcd is away: %+v", b)
	}
	for _, line := range []string{"lease ended", "slave gate unavailable"} {
		if n := strings.Count(errs.String(), line); n != 1 {
			t.Errorf("%d lines %q in a's log, want 1:\n%s", n, line, errs.String())
		}
	}
	return &errs, codes
}

// TestClusterPartitionedMaster: a master cut from etcd (a proxy between
// them, closed) keeps serving its slave, refuses a new one and says so,
// once each; when the proxy forwards again, it exits with status 1, for a
// restart to rejoin.
func TestClusterPartitionedMaster(t *testing.T) {
	srv := clustertest.Start(t)
	proxy := clustertest.NewProxy(t, srv.Endpoints[0])
	errs, codes := loseEtcd(t, proxy.Endpoint, proxy.Cut)

	proxy.Restore()
	restored := time.Now()
	select {
	case code := <-codes:
		if code != 1 || !strings.Contains(errs.String(), "etcd answers again") {
			t.Fatalf("a exited with status %d, want 1 saying etcd answers again:\n%s", code, errs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("a did not exit within 30 s of etcd coming back:\n%s", errs.String())
	}
	t.Logf("a exited %v after the proxy was restored", time.Since(restored).Round(100*time.Millisecond))
	if n := strings.Count(errs.String(), "lease ended"); n != 2 { // the line of the loss, and the exit's
		t.Errorf("%d lines about the lease's end, want 2:\n%s", n, errs.String())
	}
}

// TestClusterEtcdLostWhileRunning: with etcd stopped, a master keeps
// serving its slave and refuses a new one, saying so once each.
func TestClusterEtcdLostWhileRunning(t *testing.T) {
	srv := clustertest.Start(t)
	loseEtcd(t, srv.Endpoints[0], srv.Stop)
}

// TestClusterRefusedAtStart: a master process whose etcd is unreachable, or
// whose master id is live in the cluster, exits with status 1 saying why,
// before it serves anything.
func TestClusterRefusedAtStart(t *testing.T) {
	srv := clustertest.Start(t)
	codes := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errs testlog.Buffer
	args := []string{"-config", faultConfig(t, "a", srv.Endpoints[0])}
	go func() { codes <- run(ctx, args, &out, &errs, nil) }()
	t.Cleanup(func() { cancel(); <-codes })
	eventually(t, 20*time.Second, "a serves", func() bool { return strings.Contains(out.String(), "status page") })

	for _, tc := range []struct{ name, endpoint, want string }{
		{"duplicate id", srv.Endpoints[0], `master id \"a\" is already live in the cluster`},
		{"etcd unreachable", "127.0.0.1:1", "unreachable at start"},
	} {
		cfg := faultConfig(t, "a", tc.endpoint) // same prefix as the live a
		t.Run(tc.name, func(t *testing.T) {
			cmd, out, errs := startChild(t, "-config", cfg)
			kill := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
			defer kill.Stop()
			err := cmd.Wait()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(errs.String(), tc.want) {
				t.Fatalf("exit %v, want status 1 and %q:\n%s", err, tc.want, errs)
			}
			if strings.Contains(out.String(), "status page") {
				t.Errorf("a refused master served:\n%s", out)
			}
		})
	}
}
