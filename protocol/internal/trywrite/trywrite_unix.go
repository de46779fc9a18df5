//go:build unix

package trywrite

import (
	"os"
	"syscall"
)

// write makes one non-blocking write to fd: what it took, 0 if it would
// block.
func write(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), p)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		}
		return 0, os.NewSyscallError("write", err)
	}
}
