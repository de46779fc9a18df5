//go:build unix

// Package local is a latent slave driver whose instances are slave programs started as child processes on the master's machine.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/buildslave/buildslave/internal/procgroup"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// DefaultKillTimeout is how long Stop waits after SIGTERM before SIGKILL.
const DefaultKillTimeout = 10 * time.Second

// The environment of a slave process. The per-start password travels only
// here, never on the command line, which every user of the machine sees.
const (
	EnvMaster   = "BUILDSLAVE_MASTER"    // the master's host:port
	EnvName     = "BUILDSLAVE_NAME"      // the slave's name
	EnvPassword = "BUILDSLAVE_PASSWORD"  // the password of this start
	EnvBasedir  = "BUILDSLAVE_BASEDIR"   // the slave's base directory
	EnvMasterID = "BUILDSLAVE_MASTER_ID" // the tag: the master that started it
)

// Config describes one local latent slave.
type Config struct {
	// Slave is the slave's configuration; required.
	Slave *slave.Slave
	// BuildWaitTimeout is the slave's build_wait_timeout: how long an
	// idle process is kept after its last build. 0 means
	// latent.DefaultBuildWaitTimeout (10 minutes), negative keeps it
	// until shutdown.
	BuildWaitTimeout time.Duration
	// StopAfterEachBuild stops the process as soon as its last build
	// ends (build_wait_timeout=0), whatever BuildWaitTimeout says.
	StopAfterEachBuild bool
	// Program is the slave program, such as the examples/slave binary;
	// required. It is started as Program Args... -master Master -name
	// NAME -basedir Basedir, with the same values in the environment.
	Program string
	Args    []string
	// Master is the address the slave dials, host:port; required.
	Master string
	// Basedir is the slave's base directory, created if missing;
	// required.
	Basedir string
	// Env is added to the master's environment for the slave.
	Env []string
	// Output receives the slave's standard output and error; nil
	// discards them.
	Output io.Writer
	// KillTimeout bounds the wait between SIGTERM and SIGKILL; 0 means
	// DefaultKillTimeout.
	KillTimeout time.Duration
}

// Driver runs one local latent slave. It implements latent.LatentSlave,
// latent.Lister and latent.Checker.
//
// An instance is the process group Start makes; its id is the group's id,
// the pid of the program Start ran. Every process of it carries
// EnvMasterID in its environment, and it holds a lock on PidFile in the
// basedir for as long as any of its processes runs: so a master that was
// killed and restarted finds what it left behind (List), stops it (Stop)
// and never starts a second slave on a basedir still in use.
type Driver struct {
	cfg Config

	mu    sync.Mutex
	procs map[string]*process // by instance id: started and not stopped

	pidFile sync.Mutex // serializes Start's lock with List's look at it
}

var (
	_ latent.LatentSlave    = (*Driver)(nil)
	_ latent.Lister         = (*Driver)(nil)
	_ latent.Checker        = (*Driver)(nil)
	_ latent.BuildWaiter    = (*Driver)(nil)
	_ latent.PasswordPasser = (*Driver)(nil)
)

// process is one started slave program. Its reaper goroutine waits for it
// and closes exited; Stop joins it.
type process struct {
	inst   latent.Instance
	pid    int
	exited chan struct{}
	err    error // cmd.Wait's result; read after exited is closed
}

// New validates cfg and returns its Driver.
func New(cfg Config) (*Driver, error) {
	var errs []error
	if cfg.Slave == nil {
		errs = append(errs, errors.New("local: Config.Slave is required"))
	}
	if cfg.Program == "" {
		errs = append(errs, errors.New("local: Config.Program is required"))
	}
	if cfg.Master == "" {
		errs = append(errs, errors.New("local: Config.Master is required"))
	}
	if cfg.Basedir == "" {
		errs = append(errs, errors.New("local: Config.Basedir is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.KillTimeout <= 0 {
		cfg.KillTimeout = DefaultKillTimeout
	}
	cfg.Args = slices.Clone(cfg.Args)
	cfg.Env = slices.Clone(cfg.Env)
	return &Driver{cfg: cfg, procs: make(map[string]*process)}, nil
}

// Slave is the slave's configuration.
func (d *Driver) Slave() *slave.Slave { return d.cfg.Slave }

// BuildWaitTimeout is Config.BuildWaitTimeout, or 0 with
// Config.StopAfterEachBuild, or latent.DefaultBuildWaitTimeout if unset.
func (d *Driver) BuildWaitTimeout() time.Duration {
	switch {
	case d.cfg.StopAfterEachBuild:
		return 0
	case d.cfg.BuildWaitTimeout == 0:
		return latent.DefaultBuildWaitTimeout
	}
	return d.cfg.BuildWaitTimeout
}

// PassesPassword reports true: the process gets its start's password in
// its environment, so no other password admits an attach while it
// starts.
func (d *Driver) PassesPassword() bool { return true }

// Start starts the slave program in a process group of its own, with
// req's password in its environment. The instance id is the process id.
// It fails with an error wrapping ErrBasedirInUse while a process started
// on the basedir earlier, by this master or another, still runs.
func (d *Driver) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	if err := ctx.Err(); err != nil {
		return latent.Instance{}, err
	}
	if err := os.MkdirAll(d.cfg.Basedir, 0o750); err != nil {
		return latent.Instance{}, fmt.Errorf("local: basedir: %w", err)
	}
	d.pidFile.Lock()
	defer d.pidFile.Unlock()
	lock, err := lockBasedir(d.cfg.Basedir)
	if err != nil {
		return latent.Instance{}, err
	}
	defer lock.Close() // the slave's copy keeps the lock
	args := append(slices.Clone(d.cfg.Args), "-master", d.cfg.Master, "-name", req.Name, "-basedir", d.cfg.Basedir)
	cmd := exec.Command(d.cfg.Program, args...)
	cmd.Env = append(environ(d.cfg.Env),
		EnvMaster+"="+d.cfg.Master,
		EnvName+"="+req.Name,
		EnvPassword+"="+req.Password,
		EnvBasedir+"="+d.cfg.Basedir,
		EnvMasterID+"="+req.MasterID,
	)
	cmd.Dir = d.cfg.Basedir
	cmd.Stdout, cmd.Stderr = d.cfg.Output, d.cfg.Output
	cmd.ExtraFiles = []*os.File{lock} // inherited by every process of the instance
	g, err := procgroup.Start(cmd)
	if err != nil {
		return latent.Instance{}, fmt.Errorf("local: start %s: %w", d.cfg.Program, err)
	}
	p := &process{
		inst:   latent.Instance{ID: strconv.Itoa(g.ID()), Slave: req.Name, MasterID: req.MasterID, Started: time.Now()},
		pid:    g.ID(),
		exited: make(chan struct{}),
	}
	go func() { // joined by Stop, which waits for exited
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := writePidFile(lock, p.inst); err != nil {
		_ = g.Signal(syscall.SIGKILL)
		<-p.exited
		return latent.Instance{}, err
	}
	d.mu.Lock()
	d.procs[p.inst.ID] = p
	d.mu.Unlock()
	return p.inst, nil
}

// environ is the master's environment without BUILDSLAVE_ variables, plus
// extra.
func environ(extra []string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "BUILDSLAVE_") })
	return append(env, extra...)
}

// Stop sends SIGTERM to the instance's process groups (the one Start
// made, and those its processes made since), then SIGKILL after
// KillTimeout (or at ctx's end), and waits for their processes to exit. It
// stops an instance this Driver did not start, such as one a crashed
// master left behind, only if its processes still carry inst's master id.
// An instance already gone is not an error.
func (d *Driver) Stop(ctx context.Context, inst latent.Instance) error {
	pgid, err := strconv.Atoi(inst.ID)
	if err != nil || pgid <= 1 {
		return fmt.Errorf("local: %q is not a process group id", inst.ID)
	}
	d.mu.Lock()
	p := d.procs[inst.ID]
	d.mu.Unlock()
	found, err := d.find(inst.MasterID)
	t := found[inst.ID]
	switch {
	case p == nil && t == nil && err != nil:
		return fmt.Errorf("local: stop process group %d: %w", pgid, err)
	case p == nil && t == nil:
		return nil // gone, or not one of ours
	}
	groups := []int{pgid}
	if t != nil {
		own := syscall.Getpgrp() // never init's group or the master's own
		groups = slices.DeleteFunc(slices.Clone(t.groups), func(g int) bool { return g <= 1 || g == own })
	}
	signal(groups, syscall.SIGTERM) // ESRCH: the group is gone
	kill := time.NewTimer(d.cfg.KillTimeout)
	defer kill.Stop()
	exited := awaitExit(ctx, kill.C, p, groups)
	signal(groups, syscall.SIGKILL) // children that outlived the slave too
	if !exited && !awaitExit(ctx, nil, p, groups) {
		return fmt.Errorf("local: process group %d did not exit after SIGKILL: %w", pgid, context.Cause(ctx))
	}
	if p != nil {
		d.mu.Lock()
		delete(d.procs, inst.ID)
		d.mu.Unlock()
	}
	return nil
}

// pollInterval is how often Stop looks whether the processes of an
// instance have exited.
const pollInterval = 50 * time.Millisecond

// awaitExit waits until the instance has exited (p, if this Driver started
// it, and every process of groups: until then the basedir stays locked),
// limit fires or ctx ends, and reports whether it has exited.
func awaitExit(ctx context.Context, limit <-chan time.Time, p *process, groups []int) bool {
	if p != nil {
		select {
		case <-p.exited:
		case <-limit:
			return false
		case <-ctx.Done():
			return false
		}
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for groupsAlive(groups) {
		select {
		case <-tick.C:
		case <-limit:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// signal sends sig to each process group.
func signal(groups []int, sig syscall.Signal) {
	for _, g := range groups {
		_ = procgroup.Signal(g, sig)
	}
}

// Check returns nil while the process runs, and its exit status once it
// has exited on its own.
func (d *Driver) Check(ctx context.Context, inst latent.Instance) error {
	d.mu.Lock()
	p := d.procs[inst.ID]
	d.mu.Unlock()
	if p == nil {
		return fmt.Errorf("local: no process %s", inst.ID)
	}
	select {
	case <-p.exited:
		if p.err == nil {
			return fmt.Errorf("local: slave process %d exited with status 0", p.pid)
		}
		return fmt.Errorf("local: slave process %d exited: %w", p.pid, p.err)
	default:
		return nil
	}
}

// List returns the instances tagged with masterID that still run: those
// this Driver started, and those a master with that id started before it
// crashed or was killed, found by their tag (on Linux, every process whose
// environment carries EnvMasterID, of any slave) and by the PidFile in the
// basedir. It lists what it found along with any error.
func (d *Driver) List(ctx context.Context, masterID string) ([]latent.Instance, error) {
	found, err := d.find(masterID)
	var out []latent.Instance
	d.mu.Lock()
	for _, p := range d.procs {
		select {
		case <-p.exited:
		default:
			if p.inst.MasterID == masterID {
				out = append(out, p.inst)
				delete(found, p.inst.ID)
			}
		}
	}
	d.mu.Unlock()
	for _, t := range found {
		out = append(out, t.inst)
	}
	slices.SortFunc(out, func(a, b latent.Instance) int { return strings.Compare(a.ID, b.ID) })
	return out, err
}
