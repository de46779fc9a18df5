// Package deadlinetest checks that a writer bounds each write to its
// connection with a deadline, and leaves the connection without one once
// the write is done: a deadline left set fires its timer later, and with
// thousands of idle connections those timers wake the process for
// nothing.
package deadlinetest

import (
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// Conn records the deadlines set on a connection: write deadlines, and
// both at once.
type Conn struct {
	net.Conn
	WriteDeadlines, Deadlines []time.Time
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.WriteDeadlines = append(c.WriteDeadlines, t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *Conn) SetDeadline(t time.Time) error {
	c.Deadlines = append(c.Deadlines, t)
	return c.Conn.SetDeadline(t)
}

// OnlyWhileWriting runs, in a synctest bubble, a writer over one end of
// a net.Pipe: writer(c) returns a write that bounds itself by a deadline
// 1 s away. A write the peer reads leaves c without a deadline; a write
// the peer does not read fails once that second is over.
func OnlyWhileWriting(t *testing.T, writer func(c net.Conn) (write func([]byte) error)) {
	synctest.Test(t, func(t *testing.T) {
		ours, theirs := net.Pipe()
		defer theirs.Close()
		defer ours.Close()
		c := &Conn{Conn: ours}
		write := writer(c)

		go io.ReadFull(theirs, make([]byte, 2))
		if err := write([]byte("hi")); err != nil {
			t.Fatalf("write to a reading peer: %v", err)
		}
		if n := len(c.WriteDeadlines); n != 2 || !c.WriteDeadlines[1].IsZero() {
			t.Fatalf("deadlines after a write = %v, want one, then none", c.WriteDeadlines)
		}

		start := time.Now()
		err := write([]byte("nobody reads this"))
		if err == nil || time.Since(start) != time.Second {
			t.Errorf("write to a peer that reads nothing = %v after %v, want an error after 1s", err, time.Since(start))
		}
	})
}
