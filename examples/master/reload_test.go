package main

import (
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/internal/config"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent"
)

// A master started with no latent slave gets its first on a reload: the
// Lifecycle is created then, its latent slave builds, and the status page
// shows it.
func TestReloadAddsTheFirstLatentSlave(t *testing.T) {
	m, out := startMaster(t, testConfig(t, "[master]\n[[slaves]]\nname = \"s1\"\npassword = \"pw1\"\n"))
	if m.lifecycle() != nil {
		t.Fatal("a Lifecycle with no latent slave")
	}
	m.reload(func() (*config.Config, error) { return testConfig(t, localLatent), nil })
	if !strings.Contains(out.String(), "reconfigured") {
		t.Fatalf("reload refused:\n%s", out)
	}
	lc := m.lifecycle()
	if lc == nil {
		t.Fatal("no Lifecycle after a reload that added a latent slave")
	}
	if st, ok := lc.Status("l1"); !ok || st.State != latent.Stopped {
		t.Fatalf("l1 after the reload: %+v, %v", st, ok)
	}
	if l1 := apiSlave(t, m, "l1"); l1.Latent == nil || l1.State != "stopped" {
		t.Errorf("/api/status shows l1 as %+v", l1)
	}
	h, err := m.runner.Force("b", "test")
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if h.State() != builds.Success {
		t.Errorf("build on the first latent slave: %s\n%s", h.State(), out)
	}
	if l1 := apiSlave(t, m, "l1"); l1.Latent == nil || l1.Latent.Instance == "" {
		t.Errorf("/api/status shows l1 as %+v, want its instance", l1)
	}
	if err := m.shutdown(30*time.Second, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	assertProcessesGone(t, out.String())
}

// apiSlave returns the named slave's row of the master's /api/status.
func apiSlave(t *testing.T, m *master, name string) status.Slave {
	t.Helper()
	for _, s := range apiStatus(t, m).Slaves {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no slave %s in /api/status", name)
	return status.Slave{}
}
