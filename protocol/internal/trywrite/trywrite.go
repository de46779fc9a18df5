// Package trywrite writes to a connection under a deadline that the
// connection has only while a write waits: what the socket takes at once
// goes out without one. Setting and clearing a deadline for every write
// costs two timer changes, a tenth of what a keepalive costs a master of
// 10,000 idle slaves; and a deadline left set fires its timer later, with
// thousands of idle connections waking the process for nothing.
package trywrite

import (
	"net"
	"syscall"
	"time"
)

// Writer writes to one connection. The caller serialises its writes.
type Writer struct {
	c  net.Conn
	rc syscall.RawConn // c's socket; nil if c is not one
}

// New returns a Writer of c. A connection that is not a socket (or a
// wrapper that transforms what it writes, such as TLS, which is not a
// syscall.Conn) has every write bounded as net.Conn's deadlines do.
func New(c net.Conn) *Writer {
	w := &Writer{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc = rc
		}
	}
	return w
}

// Write writes p whole: what the socket takes at once without a deadline,
// the rest under deadline (none if zero), which the connection has only
// while that rest is written. A deadline already past fails only a write
// that has to wait.
func (w *Writer) Write(p []byte, deadline time.Time) (int, error) {
	n, err := w.now(p)
	if err != nil || n == len(p) {
		return n, err
	}
	if deadline.IsZero() {
		m, err := w.c.Write(p[n:])
		return n + m, err
	}
	if err := w.c.SetWriteDeadline(deadline); err != nil {
		return n, err
	}
	m, err := w.c.Write(p[n:])
	w.c.SetWriteDeadline(time.Time{})
	return n + m, err
}

// now writes as much of p as the socket takes at once, without waiting,
// and returns how much: 0 where c is not a socket.
func (w *Writer) now(p []byte) (n int, err error) {
	if w.rc == nil {
		return 0, nil
	}
	werr := w.rc.Write(func(fd uintptr) bool {
		n, err = write(fd, p)
		return true // never wait here
	})
	if werr != nil {
		return 0, werr
	}
	return n, err
}
