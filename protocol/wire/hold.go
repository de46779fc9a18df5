package wire

import (
	"net"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/internal/trywrite"
)

// holder is a Transport that can hold the messages written to it and
// send them together, in one write to its socket, just before it next
// reads from the socket: a peer that answers every message then gets
// several in one packet, and each end makes one system call for them
// instead of one each. The WebSocket transport of an Upgrader is one;
// Conn.Lead holds its writes while Lead's function runs.
type holder interface {
	hold(on bool) error // starts or stops holding; stopping sends what is held
}

// heldConn is the network connection under a server's WebSocket: while
// held, a write is kept in a buffer unless a read is waiting on the
// socket, and the buffer is written whole before the next read from the
// socket. So nothing held waits for an answer that cannot come: whoever
// waits for one reads, and the read sends what is held first. What is
// still held when the connection closes is dropped.
type heldConn struct {
	net.Conn

	wmu sync.Mutex       // orders writes to the socket: held ones before later ones
	w   *trywrite.Writer // of the socket; under wmu

	mu       sync.Mutex
	held     bool
	reading  bool      // a Read is waiting on the socket: writes go out at once
	buf      []byte    // written while held
	deadline time.Time // of writes to the socket
}

func (c *heldConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.held && !c.reading {
		if c.buf == nil {
			c.buf = (*heldBuffers.Get().(*[]byte))[:0]
		}
		c.buf = append(c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	held := c.takeBuf()
	c.mu.Unlock()
	if len(held) == 0 {
		return c.write(p)
	}
	held = append(held, p...)
	_, err := c.write(held)
	putHeld(held)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// heldBuffers keeps the buffers of held writes between connections' attach
// sequences: a connection holds one only while it holds writes.
var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// putHeld gives a buffer back to heldBuffers unless it grew large.
func putHeld(b []byte) {
	if cap(b) <= 64<<10 {
		b = b[:0]
		heldBuffers.Put(&b)
	}
}

// Read sends what is held, then reads; writes meanwhile go out at once.
func (c *heldConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	idle := !c.held && len(c.buf) == 0
	c.mu.Unlock()
	if idle { // nothing to send, nor to order: not even behind a blocked write
		return c.Conn.Read(p)
	}
	if err := c.send(func() { c.reading = true }); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading = false
	c.mu.Unlock()
	return n, err
}

// hold starts or stops holding writes; stopping sends what is held.
func (c *heldConn) hold(on bool) error {
	if on {
		c.mu.Lock()
		c.held = true
		c.mu.Unlock()
		return nil
	}
	return c.send(func() { c.held = false })
}

// send changes the state with set, then writes what is held.
func (c *heldConn) send(set func()) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	set()
	p := c.takeBuf()
	c.mu.Unlock()
	if len(p) == 0 {
		return nil
	}
	_, err := c.write(p)
	putHeld(p)
	return err
}

// SetWriteDeadline sets the deadline of writes to the socket, as
// net.Conn's does; the socket is given it only while a write waits (see
// write).
func (c *heldConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

// SetDeadline sets both deadlines, on the socket too (gorilla/websocket
// clears the upgrade's with it).
func (c *heldConn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

// write writes p to the socket under the deadline set (see trywrite);
// the caller holds wmu.
func (c *heldConn) write(p []byte) (int, error) {
	if c.w == nil {
		c.w = trywrite.New(c.Conn)
	}
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	return c.w.Write(p, d)
}

// quiet reports whether nothing is held nor will be.
func (c *heldConn) quiet() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.held && len(c.buf) == 0
}

// takeBuf returns what is held and empties the buffer; the caller holds
// mu. An empty buffer keeps no array.
func (c *heldConn) takeBuf() []byte {
	p := c.buf
	c.buf = nil
	return p
}
