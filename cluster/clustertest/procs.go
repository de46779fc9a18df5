package clustertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/buildslave/buildslave/internal/integration"
	"github.com/buildslave/buildslave/internal/testlog"
)

// Procs is an etcd cluster of separate processes on loopback, each member
// the real etcd server binary built from the version go.mod pins.
type Procs struct {
	// Endpoints are the members' client URLs, in member order.
	Endpoints []string
	cmds      []*exec.Cmd
	logs      []*testlog.Buffer
}

// buildEtcd builds the etcd server binary into dir.
func buildEtcd(dir string) (string, error) {
	bin := filepath.Join(dir, "etcd")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "build", "-o", bin, "go.etcd.io/etcd/server/v3").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build go.etcd.io/etcd/server/v3: %v\n%s", err, out)
	}
	return bin, nil
}

// StartProcs builds the etcd server (go build go.etcd.io/etcd/server/v3,
// which needs the build cache or the module proxy) and starts an n-member
// cluster of it, each member a process with its data in t.TempDir, on
// free loopback ports; it waits until every member serves and kills them
// in t.Cleanup. It is for integration tests: unless
// BUILDSLAVE_INTEGRATION=1 it skips t, saying so; with it, a failure to
// build or start fails t.
func StartProcs(t testing.TB, n int) *Procs {
	t.Helper()
	if os.Getenv(integration.EnvVar) != "1" {
		t.Skipf("skipping: runs a %d-member etcd cluster of separate processes (built with go build go.etcd.io/etcd/server/v3); set %s=1 to run it", n, integration.EnvVar)
	}
	bin, err := buildEtcd(t.TempDir()) // ~3 s with a warm build cache
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	type member struct{ name, client, peer string }
	ms := make([]member, n)
	var initial []string
	for i := range ms {
		c, p := freeURL(t), freeURL(t)
		ms[i] = member{name: fmt.Sprintf("m%d", i), client: c.String(), peer: p.String()}
		initial = append(initial, ms[i].name+"="+ms[i].peer)
	}
	p := &Procs{}
	for _, m := range ms {
		cmd := exec.Command(bin,
			"--name", m.name, "--data-dir", filepath.Join(t.TempDir(), m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "clustertest", "--log-level", "error")
		log := &testlog.Buffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatalf("clustertest: starting etcd member %s: %v", m.name, err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		p.cmds, p.logs = append(p.cmds, cmd), append(p.logs, log)
		p.Endpoints = append(p.Endpoints, m.client)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: p.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	defer cli.Close()
	for i, ep := range p.Endpoints {
		deadline := time.Now().Add(ReadyTimeout)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := cli.Status(ctx, ep)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("clustertest: etcd member m%d not ready after %v: %v\n%s", i, ReadyTimeout, err, p.logs[i])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return p
}

// Kill kills member i with SIGKILL and waits for it to exit.
func (p *Procs) Kill(i int) {
	p.cmds[i].Process.Kill()
	p.cmds[i].Wait()
}

// Log is what member i wrote (errors only).
func (p *Procs) Log(i int) string { return p.logs[i].String() }

// Leader is the index of the member that leads the etcd cluster now, from
// the live members' status; -1 while none names a live leader (an election
// is under way).
func (p *Procs) Leader(t testing.TB) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: p.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	defer cli.Close()
	ids := map[uint64]int{}
	var leader uint64
	for i, ep := range p.Endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			continue // killed
		}
		ids[st.Header.MemberId] = i
		if st.Leader != 0 {
			leader = st.Leader
		}
	}
	if i, ok := ids[leader]; ok {
		return i
	}
	return -1
}
