// Package idle lets a connection wait for its peer's next bytes without a
// goroutine: a connection that parks registers with the process's poller
// and is resumed, on a new goroutine, once its socket has bytes to read,
// has ended or has failed, or once it is closed. A master holding 10,000
// idle slaves then holds no goroutine (2 KiB of stack at least, and work
// for every collection) for any of them.
//
// On Linux the poller is an epoll instance, waited on through the
// runtime's own network poller by one goroutine started at the first
// Watch and kept for the life of the process, as the runtime keeps its
// own. Elsewhere, and for connections that are not sockets, Watch returns
// nil and a nil Watcher never parks: its caller waits as it would without
// this package.
package idle

import (
	"net"
	"sync"
)

// A Watcher parks one connection. Park is called by one goroutine at a
// time (the connection's reader); Close by whoever closes the connection.
type Watcher struct {
	fd    fdWatch // the socket's registration with the poller
	mu    sync.Mutex
	wake  func() // what Park was given, until it runs
	ended bool   // Close was called
}

// Watch returns a Watcher of c, or nil if c cannot be parked (not a
// socket, or no poller on this system).
func Watch(c net.Conn) *Watcher {
	w := &Watcher{}
	if !w.fd.init(c, w) {
		return nil
	}
	return w
}

// Park arranges for resume to run on a new goroutine once the socket has
// bytes to read (or has ended or failed), or once Close is called, and
// reports true: the caller's goroutine may then end. It reports false if
// it cannot (a nil Watcher, or a socket closed meanwhile), and resume will
// not run: the caller reads as it would have.
func (w *Watcher) Park(resume func()) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	if w.ended {
		w.mu.Unlock()
		return false
	}
	w.wake = resume
	w.mu.Unlock()
	if w.fd.arm() {
		return true
	}
	// Not armed; unless Close has taken resume meanwhile (and runs it),
	// the caller goes on.
	w.mu.Lock()
	taken := w.wake == nil
	w.wake = nil
	w.mu.Unlock()
	return taken
}

// Close resumes a parked connection, whose read then fails, and ends the
// Watcher: nothing parks any more. Call it once the connection is closed.
// It is idempotent, and does nothing on a nil Watcher.
func (w *Watcher) Close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
	w.fd.forget()
	w.fire()
}

// fire runs what Park was given, if it has not run yet.
func (w *Watcher) fire() {
	w.mu.Lock()
	resume := w.wake
	w.wake = nil
	w.mu.Unlock()
	if resume != nil {
		go resume()
	}
}
