package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent"
)

// clusterConfig is localLatent for master id in the cluster of srv.
func clusterConfig(t *testing.T, srv *clustertest.Server, id string) string {
	return strings.Replace(localLatent, `master_id = "test-master"`, `master_id = "`+id+`"`, 1) +
		fmt.Sprintf("[cluster]\netcd = %q\nprefix = \"/%s/\"\nlease_ttl = \"2s\"\n", srv.Endpoints[0], t.Name())
}

func apiStatus(t *testing.T, m *master) status.Snapshot {
	t.Helper()
	resp, err := http.Get("http://" + m.webAddr + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap status.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestClusterBuildForcedOnOneMasterRunsOnce(t *testing.T) {
	srv := clustertest.Start(t)
	a, outA := startMaster(t, testConfig(t, clusterConfig(t, srv, "a")))
	b, outB := startMaster(t, testConfig(t, clusterConfig(t, srv, "b")))

	snap := apiStatus(t, b)
	c := snap.Cluster
	if c == nil || c.Master != "b" || c.Leader != "a" || len(c.Masters) != 2 || !c.Masters[0].Leader || !c.Masters[1].Self ||
		c.Masters[1].Addrs["pb"] != b.pbAddr {
		t.Fatalf("b's /api/status cluster = %+v; want masters a (leader) and b (this one, at its addresses)", c)
	}

	// Forced on b, queued in etcd, claimed by exactly one master (which
	// starts the latent slave no master holds), run once.
	req, _ := http.NewRequest("POST", "http://"+b.webAddr+"/force?builder=b&reason=from+b", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || got.ID == "" {
		t.Fatalf("force on b: %s, id %q; want 202 and a request id", resp.Status, got.ID)
	}
	eventually(t, 30*time.Second, "the forced build done on one master", func() bool {
		done := 0
		for _, m := range []*master{a, b} {
			if bs := m.history.Recent(1); len(bs) == 1 && bs[0].State == builds.Success {
				done++
			}
		}
		return done == 1
	})
	eventually(t, 5*time.Second, "the request gone from the queue", func() bool { return len(apiStatus(t, a).Cluster.Requests) == 0 })
	runs := len(a.history.Recent(10)) + len(b.history.Recent(10))
	if runs != 1 {
		t.Fatalf("%d builds in the two masters' histories, want 1\na:\n%s\nb:\n%s", runs, outA, outB)
	}
	resp, err = http.Get("http://" + a.webAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"<h2>Cluster</h2>", `id="master-a"`, `id="master-b"`, "leader</span>", "(this one)"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("a's page lacks %q", want)
		}
	}
}

// The leader's stopper finds an instance by the dead master's tag when the
// dead master died before its driver named it.
func TestClusterStopIntentWithoutInstanceID(t *testing.T) {
	srv := clustertest.Start(t)
	m, _ := startMaster(t, testConfig(t, clusterConfig(t, srv, "a")))
	d := m.latents["l1"]
	ctx := t.Context()
	inst, err := d.Start(ctx, latent.StartRequest{Name: "l1", Password: "pw", MasterID: "dead-master"})
	if err != nil {
		t.Fatal(err)
	}
	alive := func() bool { return d.(latent.Checker).Check(ctx, inst) == nil }
	if !alive() {
		t.Fatal("instance not running after Start")
	}
	if err := m.stopIntent(ctx, cluster.IntentInfo{Slave: "l1", Driver: "local", Master: "dead-master"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the dead master's instance stopped", func() bool { return !alive() })
	if err := m.stopIntent(ctx, cluster.IntentInfo{Slave: "nope", Master: "dead-master", Instance: "1"}); err == nil || !strings.Contains(err.Error(), "not configured here") {
		t.Fatalf("stopping an unknown latent slave: %v", err)
	}
}

// Without etcd the master does not start, and says why.
func TestClusterEtcdUnreachableAtStart(t *testing.T) {
	cfg := testConfig(t, "[master]\n[cluster]\netcd = \"127.0.0.1:1\"\ndial_timeout = \"1s\"\n")
	_, err := start(cfg, slog.New(slog.DiscardHandler), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unreachable at start") {
		t.Fatalf("start with etcd unreachable: %v", err)
	}
}

// A build forced on b runs on a, which holds its slave.
func TestClusterBuildFollowsTheSlave(t *testing.T) {
	srv := clustertest.Start(t)
	const conf = `
[master]
master_id = "%s"
[[slaves]]
name = "s1"
password = "pw"
[[builders]]
name = "on-s1"
slaves = ["s1"]
  [[builders.steps]]
  shell = "echo ran"
[cluster]
etcd = %q
prefix = "/%s/"
lease_ttl = "2s"
`
	a, _ := startMaster(t, testConfig(t, fmt.Sprintf(conf, "a", srv.Endpoints[0], t.Name())))
	b, _ := startMaster(t, testConfig(t, fmt.Sprintf(conf, "b", srv.Endpoints[0], t.Name())))
	attachGoSlave(t, a, "s1", "pw")
	if st := apiStatus(t, b).Cluster; len(st.Owners) != 1 || st.Owners[0] != (status.SlaveOwner{Slave: "s1", Master: "a"}) {
		t.Fatalf("b sees owners %+v, want s1 on a", st.Owners)
	}
	if _, err := b.force("on-s1", "forced on b"); err != nil {
		t.Fatal(err)
	}
	lastBuild(t, a, builds.Success)
	if got := a.history.Recent(1)[0]; got.Slave != "s1" || got.Reason != "forced on b" {
		t.Errorf("a ran %+v", got)
	}
	if n := len(b.history.Recent(10)); n != 0 {
		t.Errorf("b ran %d builds, want none", n)
	}
}
