package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/internal/config"
	"github.com/buildslave/buildslave/internal/integration"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// testConfig parses a configuration for a master on loopback ports of its
// own, with its basedir in the test's directory.
func testConfig(t *testing.T, toml string) *config.Config {
	t.Helper()
	toml = strings.Replace(toml, "[master]", "[master]\nlisten = \"127.0.0.1:0\"\nlisten_msgpack = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nbasedir = \""+t.TempDir()+"\"", 1)
	cfg, err := config.Parse("test.toml", []byte(toml), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startMaster starts a master on cfg and shuts it down at the end of the
// test unless the test did.
func startMaster(t *testing.T, cfg *config.Config) (*master, *testlog.Buffer) {
	t.Helper()
	out := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(out, nil))
	m, err := start(cfg, log, out, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !strings.Contains(out.String(), "shutting down") {
			_ = m.shutdown(time.Second, 10*time.Second)
		}
	})
	return m, out
}

// attachGoSlave runs our Go slave in-process as name until the test ends.
func attachGoSlave(t *testing.T, m *master, name, password string) {
	t.Helper()
	runGoSlave(t, client.Config{Master: m.protoAddr, Protocol: client.Msgpack, Name: name, Password: password})
	eventually(t, 10*time.Second, name+" attached", func() bool { st, _ := m.mgr.State(name); return st.Attached })
}

// runGoSlave runs our Go slave in-process on cfg (its basedir in the
// test's directory, its log discarded) until stop is called or the test
// ends.
func runGoSlave(t *testing.T, cfg client.Config) (stop func()) {
	t.Helper()
	cfg.Basedir, cfg.Logger = t.TempDir(), slog.New(slog.DiscardHandler)
	s, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

// lastBuild waits for the newest build to reach state.
func lastBuild(t *testing.T, m *master, state string) {
	t.Helper()
	eventually(t, 20*time.Second, "a build in state "+state, func() bool {
		b := m.history.Recent(1)
		return len(b) == 1 && b[0].State == state
	})
}

const localLatent = `
[master]
master_id = "test-master"
[[latent_slaves]]
kind = "local"
name = "l1"
build_wait_timeout = "-1s"
missing_timeout = "20s"
[[builders]]
name = "b"
slaves = ["l1"]
  [[builders.steps]]
  name = "work"
  shell = "sleep 0.5; echo done"
`

func TestForceOverHTTP(t *testing.T) {
	m, out := startMaster(t, testConfig(t, localLatent))
	req, _ := http.NewRequest("POST", "http://"+m.webAddr+"/force?builder=b", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID      int
		Builder string
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || got.ID != 1 || got.Builder != "b" {
		t.Fatalf("force: %s %+v", resp.Status, got)
	}
	lastBuild(t, m, builds.Success)
	if b := m.history.Recent(1)[0]; b.Slave != "l1" || len(b.Steps) != 1 || !strings.Contains(b.Steps[0].Output, "done") {
		t.Errorf("build %+v", b)
	}

	// A browser form is sent back to the page; an unknown builder is 404.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.PostForm("http://"+m.webAddr+"/force", map[string][]string{"builder": {"b"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Errorf("form force: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	resp, err = http.Post("http://"+m.webAddr+"/force?builder=nope", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown builder: %s", resp.Status)
	}
	resp, err = http.Get("http://" + m.webAddr + "/api/status")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status page: %v %v", resp, err)
	}
	resp.Body.Close()
	lastBuild(t, m, builds.Success)
	if err := m.shutdown(10*time.Second, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	assertProcessesGone(t, out.String())
}

func TestReconfigureKeepsAttachedSlaves(t *testing.T) {
	const before = `
[master]
[[slaves]]
name = "s1"
password = "pw1"
[[builders]]
name = "one"
slaves = ["s1"]
  [[builders.steps]]
  shell = "true"
`
	m, _ := startMaster(t, testConfig(t, before))
	attachGoSlave(t, m, "s1", "pw1")
	events, cancel := m.mgr.Subscribe()
	defer cancel()

	after := strings.Replace(before, "[[builders]]", "[[slaves]]\nname = \"s2\"\npassword = \"pw2\"\n[[builders]]", 1) + `
[[builders]]
name = "two"
slaves = ["s1", "s2"]
  [[builders.steps]]
  shell = "echo two"
`
	if err := m.reconfigure(testConfig(t, after)); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.mgr.State("s2"); !ok {
		t.Error("s2 was not added")
	}
	if st, _ := m.mgr.State("s1"); !st.Attached {
		t.Error("s1 was dropped")
	}
	if got := m.runner.Builders(); strings.Join(got, ",") != "one,two" {
		t.Errorf("builders %v", got)
	}
	attachGoSlave(t, m, "s2", "pw2")
	h, err := m.runner.Force("two", "test")
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if h.State() != builds.Success {
		t.Errorf("build on the reconfigured builder: %s", h.State())
	}
	cancel()
	for ev := range events {
		if ev.Kind == slave.Detached && ev.Slave == "s1" {
			t.Errorf("s1 detached during the reconfiguration: %v", ev.Err)
		}
	}
}

func TestShutdownDrainsABuildAndStopsLatentSlaves(t *testing.T) {
	m, out := startMaster(t, testConfig(t, strings.Replace(localLatent, "sleep 0.5", "sleep 2", 1)))
	h, err := m.runner.Force("b", "test")
	if err != nil {
		t.Fatal(err)
	}
	lastBuild(t, m, builds.Running)
	if err := m.shutdown(30*time.Second, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if h.State() != builds.Success {
		t.Errorf("the running build was not drained: %s", h.State())
	}
	if st, _ := m.lc.Status("l1"); st.State != latent.Stopped {
		t.Errorf("l1 is %s", st.State)
	}
	if _, err := m.runner.Force("b", "late"); !errors.Is(err, builds.ErrShuttingDown) {
		t.Errorf("force after shutdown = %v", err)
	}
	assertProcessesGone(t, out.String())
}

// stuckStop is a latent driver whose Stop fails, as a cloud API that is
// down does.
type stuckStop struct {
	latent.LatentSlave
}

func (stuckStop) Stop(context.Context, latent.Instance) error {
	return errors.New("cloud API unavailable")
}

func TestShutdownNamesTheInstanceItCouldNotStop(t *testing.T) {
	cfg := testConfig(t, localLatent)
	var real latent.LatentSlave
	build := cfg.Latents[0].Driver
	cfg.Latents[0].Driver = func(env config.DriverEnv) (latent.LatentSlave, error) {
		d, err := build(env)
		real = d
		return stuckStop{d}, err
	}
	m, _ := startMaster(t, cfg)
	h, err := m.runner.Force("b", "test")
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	st, _ := m.lc.Status("l1")
	err = m.shutdown(5*time.Second, time.Second)
	if err == nil || !strings.Contains(err.Error(), "l1") || !strings.Contains(err.Error(), st.Instance.ID) {
		t.Errorf("shutdown = %v, want the instance %s of l1 named", err, st.Instance.ID)
	}
	if err := real.Stop(context.Background(), st.Instance); err != nil { // the test's own cleanup
		t.Error(err)
	}
}

// TestStockWorkerOnTheStaticSlot attaches Debian's buildbot-worker to the
// embedded default's static slot, as the banner says — created with
// create-worker's defaults (Perspective Broker), and with msgpack — and
// runs a build.
func TestStockWorkerOnTheStaticSlot(t *testing.T) {
	for _, proto := range []string{client.PB, client.Msgpack} {
		t.Run(proto, func(t *testing.T) { testStockWorkerOnTheStaticSlot(t, proto) })
	}
}

func testStockWorkerOnTheStaticSlot(t *testing.T, proto string) {
	integration.Require(t, "buildbot-worker")
	cfg, err := config.Parse(defaultName, defaultConfig, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.ListenMsgpack, cfg.HTTP, cfg.Basedir, cfg.Schedules = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", t.TempDir(), nil
	m, out := startMaster(t, cfg)
	var w *integration.Worker
	if proto == client.PB {
		w = integration.NewPBWorker(t, m.pbAddr, "static1", cfg.Raw.Slaves[0].Password)
	} else {
		w = integration.NewWorker(t, m.protoAddr, "static1", cfg.Raw.Slaves[0].Password)
	}
	w.Start()
	eventually(t, 60*time.Second, "the stock worker attached", func() bool { st, _ := m.mgr.State("static1"); return st.Attached })
	h, err := m.runner.Force("on-static", "test")
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	b := m.history.Recent(1)[0]
	if h.State() != builds.Success || !strings.Contains(b.Steps[0].Output, "Linux") {
		t.Errorf("build on the stock worker: %+v\n%s\n%s", b, out.String(), w.Log())
	}
	if fi, err := os.Stat(filepath.Join(w.Dir, "on-static", "build")); err != nil || !fi.IsDir() {
		t.Errorf("workdir: %v", err)
	}
	if l := w.Log(); strings.Contains(l, "Traceback") || strings.Contains(l, "Unhandled") {
		t.Errorf("the worker logged an error:\n%s", l)
	}
}

// A reload adds, changes and removes latent slaves: a removed one that
// has no instance is forgotten at once, a new one substantiates for its
// builder, and a running one whose entry changed keeps its instance.
func TestReconfigureAppliesLatentSlaveChanges(t *testing.T) {
	m, out := startMaster(t, testConfig(t, localLatent))
	withL2 := strings.Replace(localLatent, `name = "l1"`, `name = "l2"`, 1)
	withL2 = strings.Replace(withL2, `slaves = ["l1"]`, `slaves = ["l2"]`, 1)
	if err := m.reconfigure(testConfig(t, withL2)); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.lc.Status("l1"); ok {
		t.Error("removed latent slave l1 is still known to the Lifecycle")
	}
	if _, ok := m.mgr.State("l1"); ok {
		t.Error("removed latent slave l1 is still known to the manager")
	}
	if st, ok := m.lc.Status("l2"); !ok || st.State != latent.Stopped {
		t.Fatalf("new latent slave l2: %+v, %v", st, ok)
	}
	h, err := m.runner.Force("b", "test")
	if err != nil {
		t.Fatal(err)
	}
	lastBuild(t, m, builds.Running)
	changed := strings.Replace(withL2, `missing_timeout = "20s"`, `missing_timeout = "30s"`, 1)
	if err := m.reconfigure(testConfig(t, changed)); err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if h.State() != builds.Success {
		t.Errorf("build on the new latent slave: %s", h.State())
	}
	if st, _ := m.lc.Status("l2"); st.State != latent.Idle && st.State != latent.Running {
		t.Errorf("l2 after a change while it ran: %s (%s)", st.State, st.Reason)
	}
	if err := m.shutdown(30*time.Second, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	assertProcessesGone(t, out.String())
}
