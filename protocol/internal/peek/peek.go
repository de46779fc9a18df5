// Package peek looks at a connection's socket without reading from it:
// whether the peer's bytes wait in the kernel, and waiting until some do.
// A connection that is not a socket (or a wrapper that buffers, such as
// TLS, which is not a syscall.Conn) cannot be looked at: Unread reports
// false and Wait returns at once, so a caller then reads as it would.
package peek

import (
	"net"
	"syscall"
)

// rawConn is c's file descriptor, or nil if c is not a socket.
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// Unread reports whether the kernel holds bytes that c's peer sent and
// nobody has read yet. It never waits, not even for a reader blocked on c.
func Unread(c net.Conn) bool {
	rc := rawConn(c)
	if rc == nil {
		return false
	}
	var n int
	// Control, not Read: a reader blocked on the connection holds its read
	// lock, and this look must never wait.
	if rc.Control(func(fd uintptr) { n = look(fd) }) != nil {
		return false
	}
	return n > 0
}

// Wait waits until c's socket has a byte to read, has ended or has
// failed, on a shallow stack and holding no buffer: a goroutine that
// waits here between messages instead of inside a reader keeps the
// smallest stack. It reports false, at once, where it cannot look; what
// the next read finds is the read's to report.
func Wait(c net.Conn) bool {
	rc := rawConn(c)
	if rc == nil {
		return false
	}
	looked := false
	rc.Read(func(fd uintptr) bool {
		if looked {
			// The poller woke us: the socket became readable (or the
			// wake was spurious, and the next read waits instead).
			return true
		}
		looked = true
		return look(fd) != wouldBlock
	})
	return true
}
