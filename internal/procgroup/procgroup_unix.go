//go:build unix

package procgroup

import (
	"os"
	"os/exec"
	"syscall"
)

// Group is a started program and the processes it starts: its process
// group, whose id is the program's pid.
type Group struct {
	proc *os.Process
}

// Start starts cmd as the leader of a new process group. A cmd that asks
// for a session of its own (Setsid, as a program on a terminal does) leads
// a new group already, and gets no Setpgid.
func Start(cmd *exec.Cmd) (*Group, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if !cmd.SysProcAttr.Setsid {
		cmd.SysProcAttr.Setpgid = true
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Group{proc: cmd.Process}, nil
}

// ID is the group's id: the pid of the program Start started.
func (g *Group) ID() int { return g.proc.Pid }

// Signal sends sig to every process of the group, or to the program alone
// if the group is gone (the program may have left it).
func (g *Group) Signal(sig syscall.Signal) error {
	if err := Signal(g.proc.Pid, sig); err != nil {
		return g.proc.Signal(sig)
	}
	return nil
}

// Close releases what the group holds once its program has exited: nothing
// on Unix.
func (g *Group) Close() error { return nil }

// Signal sends sig to every process of the process group pgid (kill(2) with
// -pgid); the error is ESRCH when the group has no process left.
func Signal(pgid int, sig syscall.Signal) error {
	return syscall.Kill(-pgid, sig)
}

// Alive reports whether the process group pgid has a process that this
// process may signal.
func Alive(pgid int) bool {
	return Signal(pgid, 0) == nil
}
