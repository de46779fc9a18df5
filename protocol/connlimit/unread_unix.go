//go:build unix

package connlimit

import (
	"net"
	"syscall"
)

// unread reports whether the kernel holds bytes that the peer of nc sent
// and nobody has read yet, without reading them.
func unread(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var buf [1]byte
	// Control, not Read: a reader blocked on the connection holds its read
	// lock, and this look must never wait.
	if rc.Control(func(fd uintptr) {
		n, _, err = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}) != nil {
		return false
	}
	return err == nil && n > 0
}
