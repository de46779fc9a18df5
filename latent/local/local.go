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
	// BuildWaitTimeout is the slave's build_wait_timeout: 0 stops the
	// process after each build, negative keeps it until shutdown.
	BuildWaitTimeout time.Duration
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
type Driver struct {
	cfg Config

	mu    sync.Mutex
	procs map[string]*process // by instance id: started and not stopped
}

var (
	_ latent.LatentSlave = (*Driver)(nil)
	_ latent.Lister      = (*Driver)(nil)
	_ latent.Checker     = (*Driver)(nil)
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

// BuildWaitTimeout is Config.BuildWaitTimeout.
func (d *Driver) BuildWaitTimeout() time.Duration { return d.cfg.BuildWaitTimeout }

// Start starts the slave program in a process group of its own, with
// req's password in its environment. The instance id is the process id.
func (d *Driver) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	if err := ctx.Err(); err != nil {
		return latent.Instance{}, err
	}
	if err := os.MkdirAll(d.cfg.Basedir, 0o750); err != nil {
		return latent.Instance{}, fmt.Errorf("local: basedir: %w", err)
	}
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return latent.Instance{}, fmt.Errorf("local: start %s: %w", d.cfg.Program, err)
	}
	p := &process{
		inst:   latent.Instance{ID: strconv.Itoa(cmd.Process.Pid), Slave: req.Name, MasterID: req.MasterID, Started: time.Now()},
		pid:    cmd.Process.Pid,
		exited: make(chan struct{}),
	}
	go func() { // joined by Stop, which waits for exited
		p.err = cmd.Wait()
		close(p.exited)
	}()
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

// Stop sends SIGTERM to the process group, then SIGKILL after
// KillTimeout (or at ctx's end), waits for the program to exit and kills
// what is left of its group. An instance already gone is not an error.
func (d *Driver) Stop(ctx context.Context, inst latent.Instance) error {
	d.mu.Lock()
	p := d.procs[inst.ID]
	d.mu.Unlock()
	if p == nil {
		return nil
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM) // ESRCH: the group is gone
	t := time.NewTimer(d.cfg.KillTimeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL) // children that outlived the slave too
	select {
	case <-p.exited:
	case <-ctx.Done():
		return fmt.Errorf("local: process %d did not exit after SIGKILL: %w", p.pid, context.Cause(ctx))
	}
	d.mu.Lock()
	delete(d.procs, inst.ID)
	d.mu.Unlock()
	return nil
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

// List returns the processes this Driver started for masterID that are
// still running.
func (d *Driver) List(ctx context.Context, masterID string) ([]latent.Instance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []latent.Instance
	for _, p := range d.procs {
		select {
		case <-p.exited:
		default:
			if p.inst.MasterID == masterID {
				out = append(out, p.inst)
			}
		}
	}
	return out, nil
}
