// Package slavetest provides an in-memory slave connection for testing
// code that uses the slave manager, as net/http/httptest does for HTTP.
package slavetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/buildslave/buildslave/slave"
)

// ErrDropped is the default cause of a connection ended by Drop.
var ErrDropped = errors.New("slavetest: connection dropped")

// ErrClosed is the cause of a connection ended by Close.
var ErrClosed = errors.New("slavetest: connection closed")

var nextPort atomic.Int32

// Conn is an in-memory slave.Conn. It answers keepalives, prints and
// shutdown requests at once until it is made Silent; a silent Conn lets
// every request wait for its context, like a peer that stopped reading.
// Drop simulates a lost network connection. A Conn is safe for concurrent
// use.
type Conn struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	info   slave.Info
	remote string

	mu            sync.Mutex
	silent        bool
	wake          chan struct{} // closed when the conn stops being silent
	holdClose     bool
	closeAsked    bool
	keepalives    int
	prints        []string
	shutdownAsked bool
}

var _ slave.Conn = (*Conn)(nil)

// NewConn returns a connected Conn that reports info when it attaches.
// Each Conn gets a distinct loopback remote address.
func NewConn(info slave.Info) *Conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Conn{
		ctx:    ctx,
		cancel: cancel,
		info:   info,
		remote: fmt.Sprintf("127.0.0.1:%d", 20000+nextPort.Add(1)),
		wake:   make(chan struct{}),
	}
}

// Context is cancelled by Drop or Close.
func (c *Conn) Context() context.Context { return c.ctx }

// Info is what the Conn was created with.
func (c *Conn) Info() slave.Info { return c.info }

// RemoteAddr is a made-up loopback address, distinct per Conn.
func (c *Conn) RemoteAddr() string { return c.remote }

// answer waits, if the conn is silent, until it is not, ctx is done, or the
// connection is gone; then it counts the request with record.
func (c *Conn) answer(ctx context.Context, record func()) error {
	for {
		c.mu.Lock()
		silent, wake := c.silent, c.wake
		if !silent && c.ctx.Err() == nil {
			record()
		}
		c.mu.Unlock()
		if err := context.Cause(c.ctx); c.ctx.Err() != nil {
			return err
		}
		if !silent {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		}
	}
}

// Keepalive answers at once unless the Conn is silent.
func (c *Conn) Keepalive(ctx context.Context) error {
	return c.answer(ctx, func() { c.keepalives++ })
}

// Print records message and answers at once unless the Conn is silent.
func (c *Conn) Print(ctx context.Context, message string) error {
	return c.answer(ctx, func() { c.prints = append(c.prints, message) })
}

// RequestShutdown records the request and answers unless the Conn is
// silent. Like a real slave, the Conn then goes away: it drops itself.
func (c *Conn) RequestShutdown(ctx context.Context) error {
	if err := c.answer(ctx, func() { c.shutdownAsked = true }); err != nil {
		return err
	}
	c.Drop(errors.New("slavetest: slave shut down on request"))
	return nil
}

// Close ends the connection with cause ErrClosed, unless HoldClose was
// called: then the close is remembered and takes effect at ReleaseClose,
// like a transport whose teardown finishes late.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closeAsked = true
	hold := c.holdClose
	c.mu.Unlock()
	if !hold {
		c.cancel(ErrClosed)
	}
	return nil
}

// Drop ends the connection as a network failure would; a nil cause means
// ErrDropped.
func (c *Conn) Drop(cause error) {
	if cause == nil {
		cause = ErrDropped
	}
	c.cancel(cause)
}

// Silent makes the Conn stop answering (true) or answer again (false).
func (c *Conn) Silent(silent bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.silent == silent {
		return
	}
	c.silent = silent
	if !silent {
		close(c.wake)
		c.wake = make(chan struct{})
	}
}

// HoldClose delays the effect of Close until ReleaseClose.
func (c *Conn) HoldClose() {
	c.mu.Lock()
	c.holdClose = true
	c.mu.Unlock()
}

// ReleaseClose lets a held Close take effect now.
func (c *Conn) ReleaseClose() {
	c.mu.Lock()
	c.holdClose = false
	asked := c.closeAsked
	c.mu.Unlock()
	if asked {
		c.cancel(ErrClosed)
	}
}

// Closed reports whether Close was called.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeAsked
}

// Keepalives counts the keepalives answered.
func (c *Conn) Keepalives() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keepalives
}

// Prints returns the messages printed, oldest first.
func (c *Conn) Prints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.prints...)
}

// ShutdownRequested reports whether the master asked the slave to shut down.
func (c *Conn) ShutdownRequested() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shutdownAsked
}

// Attach logs in as the named slave and attaches a new Conn reporting
// info, failing t if the manager refuses it.
func Attach(t testing.TB, m *slave.Manager, name, password string, info slave.Info) *Conn {
	t.Helper()
	c := NewConn(info)
	if err := m.Authenticate(name, password, c.RemoteAddr()); err != nil {
		t.Fatalf("slavetest: login as %q refused: %v", name, err)
	}
	if err := m.Attach(context.Background(), name, c); err != nil {
		t.Fatalf("slavetest: attach as %q refused: %v", name, err)
	}
	return c
}
