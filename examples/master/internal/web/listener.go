package web

import (
	"container/list"
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// MinWaiting is how long a connection may wait for its next request
// before a new connection may take its place at the connection cap: long
// enough for a browser to send its request once connected.
const MinWaiting = 100 * time.Millisecond

// limitListener accepts at most max connections at once. Past it, a new
// connection takes the place of the one that has waited longest for its
// next request (a silent socket, an idle keep-alive connection, one still
// sending its headers), which is closed, provided it waited MinWaiting;
// else Accept holds the new connection until one closes or has waited
// that long, and the connections after it wait in the kernel's backlog,
// holding no file of the master. A connection whose request is being served is never closed, so
// thousands of silent sockets cannot lock browsers out: each new
// connection gets a place, and sends its request before it could lose it.
type limitListener struct {
	net.Listener
	max  int
	full func() // called when a new connection finds every place taken

	mu      sync.Mutex
	open    int
	waiting list.List     // of *limitConn not being served, longest waiting first
	freed   chan struct{} // signalled when a place frees
	done    chan struct{}
	once    sync.Once
}

func newLimitListener(ln net.Listener, max int, full func()) *limitListener {
	return &limitListener{Listener: ln, max: max, full: full, freed: make(chan struct{}, 1), done: make(chan struct{})}
}

// Accept accepts a connection, then gives it a place, closing the
// longest-waiting connection if need be or waiting for a place. The
// connection frees its place when closed.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		l.mu.Lock()
		if l.open < l.max {
			l.open++
			lc := &limitConn{Conn: c, l: l, since: time.Now()}
			lc.elem = l.waiting.PushBack(lc)
			l.mu.Unlock()
			return lc, nil
		}
		var victim *limitConn
		wait := time.Duration(-1) // no connection to replace: wait for a close
		if f := l.waiting.Front(); f != nil {
			if waited := time.Since(f.Value.(*limitConn).since); waited >= MinWaiting {
				victim = f.Value.(*limitConn)
			} else {
				wait = MinWaiting - waited
			}
		}
		l.mu.Unlock()
		l.full()
		if victim != nil {
			victim.Close()
			continue
		}
		if !l.await(wait) {
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// await waits until a place frees, wait passes (if not negative) or the
// listener is closed; it reports false for the last.
func (l *limitListener) await(wait time.Duration) bool {
	var expired <-chan time.Time
	if wait >= 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-l.freed:
	case <-expired:
	case <-l.done:
		return false
	}
	return true
}

// release frees c's place.
func (l *limitListener) release(c *limitConn) {
	l.mu.Lock()
	l.open--
	c.gone = true
	if c.elem != nil {
		l.waiting.Remove(c.elem)
		c.elem = nil
	}
	l.mu.Unlock()
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

// Close closes the listener and ends a waiting Accept.
func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn frees its place when first closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
	// Guarded by l.mu:
	since   time.Time     // when it started waiting for its next request
	elem    *list.Element // in l.waiting; nil while being served or closed
	serving int           // requests being served (HTTP/1: one at most)
	gone    bool          // closed
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// serve marks c as serving a request until the returned function is
// called.
func (c *limitConn) serve() (done func()) {
	l := c.l
	l.mu.Lock()
	c.serving++
	if c.elem != nil {
		l.waiting.Remove(c.elem)
		c.elem = nil
	}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if c.serving--; c.serving == 0 && !c.gone {
			c.since = time.Now()
			c.elem = l.waiting.PushBack(c)
		}
	}
}

// connKey is the context key of the connection a request came on.
type connKey struct{}

// withConn is an http.Server's ConnContext: it records the connection
// in the context of its requests, for Handler.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// serving marks the connection of r, if it came through a Guard's
// Listener, as serving r until the returned function is called.
func serving(r *http.Request) (done func()) {
	if c, ok := r.Context().Value(connKey{}).(*limitConn); ok {
		return c.serve()
	}
	return func() {}
}
