//go:build unix

package peek

import "syscall"

// wouldBlock is what look returns for a socket with nothing to read.
const wouldBlock = -1

// look returns how many bytes (0 or 1) the socket fd holds unread, 0 for
// one that ended or failed, or wouldBlock; it neither waits nor reads.
func look(fd uintptr) int {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN:
		return wouldBlock
	case err != nil:
		return 0
	}
	return n
}
