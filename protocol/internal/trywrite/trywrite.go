// Package trywrite writes to a socket what it takes at once, without
// waiting and without a deadline. A server that bounds each write by a
// deadline can then set one only for a write that has to wait: setting
// and clearing one costs two timer changes a write, a tenth of what
// a keepalive costs a master of 10,000 idle slaves.
package trywrite

import (
	"net"
	"syscall"
)

// Write writes to c's socket as much of p as the socket takes at once and
// returns how much; n < len(p) with a nil error means that the rest would
// wait. A connection that is not a socket (or a wrapper that transforms
// what it writes, such as TLS, which is not a syscall.Conn) takes nothing
// here: n is 0 and the caller writes as it would.
func Write(c net.Conn, p []byte) (n int, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, nil
	}
	werr := rc.Write(func(fd uintptr) bool {
		n, err = write(fd, p)
		return true // never wait here
	})
	if werr != nil {
		return 0, werr
	}
	return n, err
}
