package main

import (
	"net"
	"sync"
)

// twistedConn writes as Twisted, the stock slave's networking, does: what
// the slave writes while it handles what one read brought (its answers to
// requests that came together) goes out in one write, when it next reads;
// a write while it waits on the socket goes out at once. The stock
// slave's packets show it: its PB dialect, version and login in one
// segment, a command's last update and completion in one burst.
type twistedConn struct {
	net.Conn
	mu      sync.Mutex // orders writes: held ones first
	reading bool       // a Read waits on the socket
	held    []byte
}

func (c *twistedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.held) > 0 {
		if _, err := c.Conn.Write(c.held); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		c.held = c.held[:0]
	}
	c.reading = true
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading = false
	c.mu.Unlock()
	return n, err
}

func (c *twistedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading {
		return c.Conn.Write(p)
	}
	c.held = append(c.held, p...)
	return len(p), nil
}
