package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/notify/notifytest"
)

// childMaster is an example master run as a separate process.
type childMaster struct {
	id       string
	out, err *testlog.Buffer
	kill     func()
	web      string // host:port of its web port
	pb       string // where slaves dial it
}

var statusPageRE = regexp.MustCompile(`status page: http://([0-9.:]+)/`)

// startClusterMaster runs master id of the cluster as a child process with
// the configuration cfg and waits until it serves.
func startClusterMaster(t *testing.T, id, cfg string) *childMaster {
	t.Helper()
	cmd, out, errs := startChild(t, "-config", writeFile(t, cfg))
	cm := &childMaster{id: id, out: out, err: errs, kill: func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() }}
	eventually(t, 20*time.Second, id+" serves", func() bool { return statusPageRE.MatchString(out.String()) })
	cm.web = statusPageRE.FindStringSubmatch(out.String())[1]
	for _, mi := range cm.status(t).Masters {
		if mi.ID == id {
			cm.pb = mi.Addrs["pb"]
		}
	}
	return cm
}

func (cm *childMaster) status(t *testing.T) *status.Cluster {
	t.Helper()
	resp, err := http.Get("http://" + cm.web + "/api/status")
	if err != nil {
		t.Fatalf("%s: %v", cm.id, err)
	}
	defer resp.Body.Close()
	var snap status.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil || snap.Cluster == nil {
		t.Fatalf("%s's /api/status: %v, cluster %v", cm.id, err, snap.Cluster)
	}
	return snap.Cluster
}

// procsConfig is master id's configuration in the cluster of etcd
// processes: lease TTL leaseTTL, slaves s1 and s2 (missing mail to smtp
// after 6 s), local latent slave l1, and builders.
func procsConfig(t *testing.T, etcd *clustertest.Procs, leaseTTL, smtp, id, builders string) string {
	endpoints, _ := json.Marshal(etcd.Endpoints)
	return fmt.Sprintf(`
[master]
listen = "127.0.0.1:0"
listen_msgpack = "127.0.0.1:0"
http = "127.0.0.1:0"
basedir = %q
[cluster]
etcd = %s
master_id = %q
lease_ttl = %q
[mail]
fromaddr = "ci@example.com"
relayhost = %q
[[slaves]]
name = "s1"
password = "pw1"
notify_on_missing = "admin@example.com"
missing_timeout = "6s"
[[slaves]]
name = "s2"
password = "pw2"
notify_on_missing = "admin@example.com"
missing_timeout = "6s"
[[latent_slaves]]
kind = "local"
name = "l1"
build_wait_timeout = "-1s"
%s`, t.TempDir(), endpoints, id, leaseTTL, smtp, builders)
}

// TestClusterKillAMaster: three etcd members and three example masters,
// each a process of its own. Master a leads, holds slaves s1 and s2, and
// runs a build on its latent slave l1. kill -9 a: another master leads,
// a's build request is marked lost with a reason, s1 (our Go slave, given
// the three masters) attaches to b, the new leader stops a's latent
// instance, and s2, which left a just before and never comes back, gets
// exactly one missing mail, from the leader.
func TestClusterKillAMaster(t *testing.T) {
	etcd := clustertest.StartProcs(t, 3)
	smtp := notifytest.NewSMTPServer(nil)
	t.Cleanup(smtp.Close)
	config := func(id, builders string) string { return procsConfig(t, etcd, "2s", smtp.Addr, id, builders) }
	// Only a has the builder: the build forced on a runs on a.
	a := startClusterMaster(t, "a", config("a", "[[builders]]\nname = \"long\"\nslaves = [\"l1\"]\n  [[builders.steps]]\n  shell = \"sleep 60\"\n"))
	b := startClusterMaster(t, "b", config("b", ""))
	c := startClusterMaster(t, "c", config("c", ""))
	if st := b.status(t); st.Leader != "a" || len(st.Masters) != 3 {
		t.Fatalf("b sees %+v; want three masters, a leading", st)
	}

	runGoSlave(t, client.Config{Master: a.pb + "," + b.pb + "," + c.pb, Name: "s1", Password: "pw1"}) // our Go slave, given the three
	stopS2 := runGoSlave(t, client.Config{Master: a.pb, Name: "s2", Password: "pw2"})
	eventually(t, 10*time.Second, "s1 and s2 owned by a", func() bool {
		n := 0
		for _, o := range b.status(t).Owners {
			if o.Master == "a" && (o.Slave == "s1" || o.Slave == "s2") {
				n++
			}
		}
		return n == 2
	})

	resp, err := http.Post("http://"+a.web+"/force?builder=long", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, 20*time.Second, "the build runs on a", func() bool { return strings.Contains(a.out.String(), "long #1: started on l1") })
	// The latent slave's state line, naming its instance, is printed by
	// another goroutine than the build's.
	var m []string
	eventually(t, 10*time.Second, "a names l1's instance", func() bool {
		m = instanceRE.FindStringSubmatch(a.out.String())
		return m != nil
	})
	pgid, _ := strconv.Atoi(m[1])
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })

	stopS2() // s2 leaves a and never comes back: a records the notice it is owed
	eventually(t, 10*time.Second, "s2 released by a", func() bool {
		for _, o := range b.status(t).Owners {
			if o.Slave == "s2" {
				return false
			}
		}
		return true
	})
	a.kill()
	killed := time.Now()

	eventually(t, 15*time.Second, "another master leads", func() bool {
		l := b.status(t).Leader
		return l == "b" || l == "c"
	})
	t.Logf("leader %s, %v after kill -9 a (lease TTL 2 s)", b.status(t).Leader, time.Since(killed).Round(100*time.Millisecond))
	eventually(t, 10*time.Second, "a's build request lost, with a reason", func() bool {
		rs := c.status(t).Requests
		return len(rs) == 1 && rs[0].State == "lost" && strings.Contains(rs[0].Lost, `master "a"`)
	})

	eventually(t, 10*time.Second, "s1 attached to b", func() bool {
		for _, o := range c.status(t).Owners {
			if o.Slave == "s1" {
				return o.Master == "b"
			}
		}
		return false
	})
	t.Logf("s1 on b %v after kill -9 a", time.Since(killed).Round(100*time.Millisecond))

	eventually(t, 15*time.Second, "a's latent instance stopped by the leader", func() bool {
		return syscall.Kill(-pgid, 0) == syscall.ESRCH &&
			len(b.err.Matching("leader stopped a dead master's latent instance", "slave=l1"))+len(c.err.Matching("leader stopped a dead master's latent instance", "slave=l1")) == 1
	})
	t.Logf("a's instance stopped %v after kill -9 a", time.Since(killed).Round(100*time.Millisecond))

	// a died before s2's missing_timeout: the leader's sweep sends its
	// notice, once; none for s1, which came back.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := smtp.Wait(ctx, 1); err != nil {
		t.Fatalf("no missing mail for s2: %v\nb:\n%s\nc:\n%s", err, b.err, c.err)
	}
	t.Logf("missing mail for s2 %v after kill -9 a (missing_timeout 6 s)", time.Since(killed).Round(100*time.Millisecond))
	// Wait past the deadline of any second notice (s1's would have been
	// due 6 s after the kill; a second send of s2's would follow at the next
	// sweep, one lease TTL later): none may come.
	for deadline := killed.Add(10 * time.Second); time.Now().Before(deadline) && len(smtp.Messages()) == 1; {
		time.Sleep(100 * time.Millisecond)
	}
	if msgs := smtp.Messages(); len(msgs) != 1 || !strings.Contains(msgs[0].Subject, "s2") {
		for _, m := range msgs {
			t.Logf("mail: %s", m.Subject)
		}
		t.Fatalf("%d mails, want exactly one, for s2", len(msgs))
	}
}

// TestClusterKillTheEtcdLeader: kill -9 the etcd member that leads the
// etcd cluster while a build runs on a slave of master a. The build ends
// well, both masters keep their leases, and once etcd has a new leader a
// new slave attaches to b and a build forced on b runs on a's slave.
func TestClusterKillTheEtcdLeader(t *testing.T) {
	etcd := clustertest.StartProcs(t, 3)
	// The default lease TTL (10 s): an etcd election took up to 4.1 s here,
	// and a master whose lease ran out meanwhile exits by design.
	const leaseTTL = "10s"
	const builders = "[[builders]]\nname = \"slow\"\nslaves = [\"s1\"]\n  [[builders.steps]]\n  shell = \"sleep 4\"\n"
	a := startClusterMaster(t, "a", procsConfig(t, etcd, leaseTTL, "127.0.0.1:1", "a", builders))
	b := startClusterMaster(t, "b", procsConfig(t, etcd, leaseTTL, "127.0.0.1:1", "b", builders))
	runGoSlave(t, client.Config{Master: a.pb, Name: "s1", Password: "pw1"})
	owned := func(slave, master string) func() bool {
		return func() bool {
			for _, o := range b.status(t).Owners {
				if o.Slave == slave {
					return o.Master == master
				}
			}
			return false
		}
	}
	eventually(t, 10*time.Second, "s1 owned by a", owned("s1", "a"))
	resp, err := http.Post("http://"+a.web+"/force?builder=slow", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, 20*time.Second, "the build runs on a", func() bool { return strings.Contains(a.out.String(), "slow #1: started on s1") })

	old := etcd.Leader(t)
	if old < 0 {
		t.Fatal("no etcd member leads")
	}
	etcd.Kill(old)
	killed := time.Now()
	eventually(t, 10*time.Second, "a new etcd leader", func() bool { l := etcd.Leader(t); return l >= 0 && l != old })
	t.Logf("etcd member m%d led; m%d leads %v after its kill -9", old, etcd.Leader(t), time.Since(killed).Round(100*time.Millisecond))
	eventually(t, 10*time.Second, "the build on s1 ends well", func() bool { return strings.Contains(a.out.String(), "slow #1: success on s1") })

	runGoSlave(t, client.Config{Master: b.pb, Name: "s2", Password: "pw2"})
	eventually(t, 10*time.Second, "s2, new, owned by b", owned("s2", "b"))
	t.Logf("s2 owned by b %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	if st := b.status(t); len(st.Masters) != 2 || st.Leader == "" || st.Error != "" {
		t.Fatalf("b's cluster status %+v; want a and b, a leader, no error", st)
	}
	resp, err = http.Post("http://"+b.web+"/force?builder=slow", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, 20*time.Second, "the build forced on b runs on a's s1", func() bool { return strings.Contains(a.out.String(), "slow #2: success on s1") })
	for _, m := range []*childMaster{a, b} {
		if strings.Contains(m.err.String(), "lease ended") {
			t.Errorf("%s lost its lease:\n%s", m.id, m.err)
		}
	}
}
