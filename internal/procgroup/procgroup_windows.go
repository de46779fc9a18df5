package procgroup

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Group is a started program and the processes it starts: a job object
// that the program joined before it ran its first instruction (so none of
// its children can escape it), and the console process group the program
// leads.
type Group struct {
	pid uint32
	job windows.Handle
}

// terminatedExitCode is the exit status that killing the group gives its
// processes, as taskkill /F does.
const terminatedExitCode = 1

// Start starts cmd in a new job object and a new console process group. The
// program is created suspended, put in the job, then resumed.
func Start(cmd *exec.Cmd) (*Group, error) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return nil, fmt.Errorf("procgroup: create job object: %w", err)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.CreationFlags |= windows.CREATE_SUSPENDED | windows.CREATE_NEW_PROCESS_GROUP
	if err := cmd.Start(); err != nil {
		_ = windows.CloseHandle(job)
		return nil, err
	}
	g := &Group{pid: uint32(cmd.Process.Pid), job: job}
	if err := g.adopt(); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = windows.CloseHandle(job)
		return nil, err
	}
	return g, nil
}

// adopt puts the suspended program in the job, then resumes it.
func (g *Group) adopt() error {
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, g.pid)
	if err != nil {
		return fmt.Errorf("procgroup: open process %d: %w", g.pid, err)
	}
	defer windows.CloseHandle(h)
	if err := windows.AssignProcessToJobObject(g.job, h); err != nil {
		return fmt.Errorf("procgroup: put process %d in a job object: %w", g.pid, err)
	}
	return resume(g.pid)
}

// resume resumes the threads of process pid (one, for a process created
// suspended).
func resume(pid uint32) error {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return fmt.Errorf("procgroup: list threads: %w", err)
	}
	defer windows.CloseHandle(snap)
	te := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	resumed := 0
	for err = windows.Thread32First(snap, &te); err == nil; err = windows.Thread32Next(snap, &te) {
		if te.OwnerProcessID != pid {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, te.ThreadID)
		if err != nil {
			return fmt.Errorf("procgroup: open thread %d of process %d: %w", te.ThreadID, pid, err)
		}
		_, err = windows.ResumeThread(th)
		_ = windows.CloseHandle(th)
		if err != nil {
			return fmt.Errorf("procgroup: resume thread %d of process %d: %w", te.ThreadID, pid, err)
		}
		resumed++
	}
	if !errors.Is(err, windows.ERROR_NO_MORE_FILES) {
		return fmt.Errorf("procgroup: list threads: %w", err)
	}
	if resumed == 0 {
		return fmt.Errorf("procgroup: process %d has no thread to resume", pid)
	}
	return nil
}

// ID is the group's id: the pid of the program Start started, which is
// also its console process group's id.
func (g *Group) ID() int { return int(g.pid) }

// Signal kills every process of the job for SIGKILL (their exit status is
// 1, as after taskkill /F). Windows has no other signals: any other sig
// sends CTRL_BREAK_EVENT to the program's console process group, which a
// console program may handle to stop cleanly, and which fails where the
// slave has no console; the caller escalates to SIGKILL after its grace
// period either way.
func (g *Group) Signal(sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return windows.TerminateJobObject(g.job, terminatedExitCode)
	}
	return windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, g.pid)
}

// Close releases the job object once its program has exited; processes
// still in the job go on running, as a Unix process group's do.
func (g *Group) Close() error { return windows.CloseHandle(g.job) }
