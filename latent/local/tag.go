//go:build unix

package local

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/buildslave/buildslave/latent"
)

// PidFile is the file, in a local latent slave's basedir, that names the
// instance running there: its process group, slave, master id and start
// time. The instance's processes hold an flock(2) on it, inherited from
// Start, for as long as any of them runs; a file nobody holds is stale.
const PidFile = ".buildslave-local.pid"

// ErrBasedirInUse is wrapped by the error of a Start on a basedir where a
// slave started earlier still runs.
var ErrBasedirInUse = errors.New("basedir in use")

// lockBasedir opens basedir's PidFile and locks it for a new instance. The
// file is opened close-on-exec: only the instance's program inherits it,
// through exec.Cmd.ExtraFiles.
func lockBasedir(basedir string) (*os.File, error) {
	path := filepath.Join(basedir, PidFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("local: pid file: %w", err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		if err := f.Truncate(0); err != nil { // the last instance's record is stale
			f.Close()
			return nil, fmt.Errorf("local: pid file: %w", err)
		}
		return f, nil
	}
	defer f.Close()
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("local: lock %s: %w", path, err)
	}
	holder := "a process started earlier"
	if inst, ok := readPidFile(f); ok {
		holder = fmt.Sprintf("process group %s of slave %q, started by master %q at %s",
			inst.ID, inst.Slave, inst.MasterID, inst.Started.Format(time.RFC3339))
	}
	return nil, fmt.Errorf("local: %w: %s is locked by %s; not starting a second slave on it (stop it, or let its master's reaper do so)",
		ErrBasedirInUse, path, holder)
}

// writePidFile records inst in the locked, emptied PidFile f.
func writePidFile(f *os.File, inst latent.Instance) error {
	rec := fmt.Sprintf("pid=%s\nslave=%s\nmaster_id=%s\nstarted=%s\n",
		inst.ID, inst.Slave, inst.MasterID, inst.Started.Format(time.RFC3339Nano))
	if _, err := f.WriteAt([]byte(rec), 0); err != nil {
		return fmt.Errorf("local: pid file: %w", err)
	}
	return nil
}

// maxPidFile bounds how much of a PidFile is read.
const maxPidFile = 4096

// readPidFile parses a PidFile; ok is false if it names no process group.
func readPidFile(f *os.File) (inst latent.Instance, ok bool) {
	sc := bufio.NewScanner(io.LimitReader(io.NewSectionReader(f, 0, maxPidFile), maxPidFile))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "pid":
			inst.ID = v
		case "slave":
			inst.Slave = v
		case "master_id":
			inst.MasterID = v
		case "started":
			inst.Started, _ = time.Parse(time.RFC3339Nano, v)
		}
	}
	pid, err := strconv.Atoi(inst.ID)
	return inst, err == nil && pid > 1
}

// pidFileInstance returns the instance the basedir's PidFile names, if
// its processes still hold the lock and it carries masterID.
func (d *Driver) pidFileInstance(masterID string) (*tagged, error) {
	d.pidFile.Lock()
	defer d.pidFile.Unlock()
	f, err := os.Open(filepath.Join(d.cfg.Basedir, PidFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("local: pid file: %w", err)
	}
	defer f.Close()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case err == nil:
		return nil, nil // stale: nothing holds it
	case !errors.Is(err, syscall.EWOULDBLOCK):
		return nil, fmt.Errorf("local: pid file: %w", err)
	}
	inst, ok := readPidFile(f)
	if !ok || inst.MasterID != masterID {
		return nil, nil
	}
	pgid, _ := strconv.Atoi(inst.ID)
	return &tagged{inst: inst, groups: []int{pgid}}, nil
}

// tagged is an instance found by its tag, with the process groups its
// processes are in.
type tagged struct {
	inst   latent.Instance
	groups []int
}

// find returns the running instances tagged with masterID, by id: those
// the process scan finds, and the one the basedir's PidFile names.
func (d *Driver) find(masterID string) (map[string]*tagged, error) {
	procs, scanErr := scanTagged(masterID)
	found := instancesOf(procs, masterID)
	t, pidErr := d.pidFileInstance(masterID)
	if t != nil {
		if f := found[t.inst.ID]; f != nil {
			f.inst.Started = t.inst.Started
		} else {
			found[t.inst.ID] = t
		}
	}
	return found, errors.Join(scanErr, pidErr)
}

// procInfo is one running process that carries a master's tag.
type procInfo struct {
	pid, ppid, pgid int
	slave           string // its EnvName
}

// instancesOf groups tagged processes into instances. A process whose
// parent carries the same tag belongs to its parent's instance; the
// others are roots: the program Start ran, or what is left of its tree
// once it died. An instance is named by its root's process group, the one
// Start made, which outlives its leader.
func instancesOf(procs []procInfo, masterID string) map[string]*tagged {
	byPID := make(map[int]procInfo, len(procs))
	for _, p := range procs {
		byPID[p.pid] = p
	}
	found := make(map[string]*tagged)
	for _, p := range procs {
		root := p
		for range len(procs) { // a bound, in case the parents read raced into a cycle
			parent, ok := byPID[root.ppid]
			if !ok || parent.slave != root.slave {
				break
			}
			root = parent
		}
		id := strconv.Itoa(root.pgid)
		t := found[id]
		if t == nil {
			t = &tagged{inst: latent.Instance{ID: id, Slave: root.slave, MasterID: masterID}}
			found[id] = t
		}
		if !slices.Contains(t.groups, p.pgid) {
			t.groups = append(t.groups, p.pgid)
		}
	}
	return found
}
