//go:build unix

package commands

import (
	"os"
	"os/exec"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair (our side, the command's side).
// Tests replace it to see a machine that has none.
var openPTY = pty.Open

// openTerminal opens a pseudo-terminal and makes it cmd's stdin, stdout,
// stderr and controlling terminal, in a session of its own (whose process
// group procgroup signals as any other). Its error says why there is no
// terminal: no /dev/ptmx, no devpts mounted, too many open.
func openTerminal(cmd *exec.Cmd) (*terminal, error) {
	ptm, tty, err := openPTY()
	if err != nil {
		return nil, err
	}
	ours, err := pollable(ptm)
	if err != nil {
		tty.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true} // Ctty 0: stdin
	return &terminal{pty: ours, tty: tty}, nil
}

// pollable returns f's descriptor, duplicated, as a non-blocking File
// whose Read ends when it is closed (pty.Open hands our side over in
// blocking mode), and closes f.
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
