//go:build unix

package local

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// TestPidFileFindsAnInstance checks the portable mechanism alone (on Linux
// the /proc scan finds the same instance): the PidFile names the instance
// while its process holds the lock, and nothing once it has exited,
// though the file stays.
func TestPidFileFindsAnInstance(t *testing.T) {
	s, err := slave.New("bot", "pw")
	if err != nil {
		t.Fatal(err)
	}
	basedir := t.TempDir()
	d, err := New(Config{Slave: s, Program: "sh", Args: []string{"-c", "exec sleep 60"}, Master: "127.0.0.1:1", Basedir: basedir})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := d.Start(t.Context(), latent.StartRequest{Name: "bot", Password: "pw", MasterID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(t.Context(), inst)
	found, err := d.pidFileInstance("m1")
	if err != nil || found == nil {
		t.Fatalf("pidFileInstance = %v, %v", found, err)
	}
	if got := found.inst; got.ID != inst.ID || got.Slave != "bot" || got.MasterID != "m1" || !got.Started.Equal(inst.Started) {
		t.Errorf("pid file names %+v, want %+v", got, inst)
	}
	if other, err := d.pidFileInstance("m2"); other != nil || err != nil {
		t.Errorf("another master's id: %v, %v", other, err)
	}
	if _, err := lockBasedir(basedir); !errors.Is(err, ErrBasedirInUse) {
		t.Errorf("lock of a basedir in use = %v", err)
	}
	if err := d.Stop(t.Context(), inst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(basedir, PidFile)); err != nil {
		t.Fatal(err)
	}
	if stale, err := d.pidFileInstance("m1"); stale != nil || err != nil {
		t.Errorf("stale pid file: %v, %v", stale, err)
	}
}

// TestInstancesOf groups a wrapper, its slave and the slave's command (in
// a group of its own) into one instance named by the wrapper's group; a
// command left alone once its slave died is an instance of its own.
func TestInstancesOf(t *testing.T) {
	got := instancesOf([]procInfo{
		{pid: 101, ppid: 100, pgid: 100, slave: "a"}, // the slave, child of the wrapper
		{pid: 100, ppid: 1, pgid: 100, slave: "a"},   // the wrapper, orphaned
		{pid: 102, ppid: 101, pgid: 102, slave: "a"}, // a command in its own group
		{pid: 200, ppid: 1, pgid: 199, slave: "b"},   // what is left of another: its leader died
		{pid: 300, ppid: 1, pgid: 300, slave: "a"},   // a command whose slave died
	}, "m1")
	want := map[string]tagged{
		"100": {inst: latent.Instance{ID: "100", Slave: "a", MasterID: "m1"}, groups: []int{100, 102}},
		"199": {inst: latent.Instance{ID: "199", Slave: "b", MasterID: "m1"}, groups: []int{199}},
		"300": {inst: latent.Instance{ID: "300", Slave: "a", MasterID: "m1"}, groups: []int{300}},
	}
	if len(got) != len(want) {
		t.Fatalf("instances %v, want %v", got, want)
	}
	for id, w := range want {
		g := got[id]
		if g == nil || g.inst != w.inst || !slices.Equal(slices.Sorted(slices.Values(g.groups)), w.groups) {
			t.Errorf("instance %s = %+v, want %+v", id, g, w)
		}
	}
}
