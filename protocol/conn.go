package protocol

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// Conn is one slave's connection on the master: the slave.Conn the manager
// holds, and a remote.Commander that runs the build's commands (an
// application calls remote.Start(ctx, build.Conn(), req), which works on
// a pb.Conn alike). Its methods are safe for concurrent use.
type Conn struct {
	h    *Handler
	name string
	w    *wire.Conn
	info slave.Info // set before the connection is attached, then read-only
	// endLogin ends the manager's hold on the name (Manager.Login) once
	// the attach is over; a no-op for a connection that did not log in.
	endLogin func()

	attachErr error // why the attach sequence failed; read after it

	mu       sync.Mutex
	commands map[string]command // running commands by command_id
	ended    bool               // the connection is over: no new commands
}

var _ slave.Conn = (*Conn)(nil)

func newConn(h *Handler, name string, t wire.Transport) *Conn {
	c := &Conn{h: h, name: name, endLogin: func() {}}
	c.w = wire.NewConn(t, c.handle)
	return c
}

// Name is the slave's name, as authenticated.
func (c *Conn) Name() string { return c.name }

// Context is cancelled when the connection ends; context.Cause says why.
func (c *Conn) Context() context.Context { return c.w.Context() }

// Info is what the slave reported about itself when it attached.
func (c *Conn) Info() slave.Info { return c.info }

// RemoteAddr is the slave's address.
func (c *Conn) RemoteAddr() string { return c.w.RemoteAddr() }

// Close drops the connection without waiting for the slave.
func (c *Conn) Close() error { return c.w.Close() }

// Keepalive sends a keepalive and waits for the slave's answer.
func (c *Conn) Keepalive(ctx context.Context) error {
	_, err := c.w.Call(ctx, "keepalive", nil)
	return err
}

// Print shows message in the slave's log and waits for its answer.
func (c *Conn) Print(ctx context.Context, message string) error {
	_, err := c.w.Call(ctx, "print", map[string]any{"message": message})
	return err
}

// RequestShutdown asks the slave process to exit; it waits for the
// slave's acknowledgement.
func (c *Conn) RequestShutdown(ctx context.Context) error {
	_, err := c.w.Call(ctx, "shutdown", nil)
	return err
}

// serve runs the connection on goroutines of its own: its attach
// sequence runs once its turn comes in the Handler's queue of attach
// sequences, on one of the queue's goroutines, reading the connection itself
// (wire.Conn.Lead); then wire.Conn.Go reads the connection's messages on
// goroutines with the smallest stack an idle reader needs until it ends,
// then logs one line if the connection failed or misbehaved and calls
// done. An attached slave costs one goroutine; a slave waiting to attach,
// none.
func (c *Conn) serve(done func()) {
	c.h.attaching.Go(c.h.maxAttaching(), func() {
		c.w.Lead(func() {
			if c.attachErr = c.attach(); c.attachErr != nil {
				c.w.CloseWithCause(c.attachErr)
			}
		})
		c.w.Go(func(cause error) {
			defer done()
			c.end(cause)
			c.logEnd(cause)
		})
	})
}

// logEnd logs one line if the connection failed or misbehaved.
func (c *Conn) logEnd(cause error) {
	log := c.h.logger().With("slave", c.name, "remote", c.RemoteAddr())
	var refused *refusedError
	switch {
	case errors.Is(cause, wire.ErrMalformed), errors.Is(cause, wire.ErrTooLarge):
		log.Warn("slave sent bad input; connection dropped", "reason", cause.Error())
	case errors.Is(cause, budget.ErrExhausted):
		log.Warn("slave message got no memory in time; connection dropped", "reason", cause.Error())
	case errors.As(c.attachErr, &refused):
		// The manager logged why.
	case c.attachErr != nil:
		log.Warn("slave attach failed; connection dropped", "reason", c.attachErr.Error())
	default:
		log.Debug("slave connection ended", "reason", cause.Error())
	}
}

// refusedError is an attach the manager refused.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return "attach refused: " + e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// end fails every running command with the connection's cause.
func (c *Conn) end(cause error) {
	c.mu.Lock()
	c.ended = true
	commands := c.commands
	c.commands = nil
	c.mu.Unlock()
	for _, cmd := range commands {
		cmd.Finish(fmt.Errorf("connection lost: %w", cause))
	}
}

// handle answers the slave's requests; it runs on the reader goroutine.
func (c *Conn) handle(ctx context.Context, req wire.Message) (any, error) {
	op := req.Op()
	if _, ok := requestOps[op]; !ok {
		return nil, wire.UnknownOp(op)
	}
	id, err := req.String("command_id")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	cmd, ok := c.commands[id]
	c.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s for command %q, which is not running", wire.ErrMalformed, op, id)
	}
	if op == "complete" {
		c.forget(id)
	}
	return requestOps[op](cmd, req)
}

// requestOps are the slave's requests about its commands.
var requestOps = map[string]func(command, wire.Message) (any, error){
	"update":                         command.update,
	"complete":                       command.complete,
	"update_upload_file_write":       command.uploadWrite,
	"update_upload_directory_write":  command.uploadWrite,
	"update_upload_file_utime":       command.uploadUtime,
	"update_upload_file_close":       command.uploadClose,
	"update_upload_directory_unpack": command.uploadClose,
	"update_read_file":               command.readFile,
	"update_read_file_close":         command.readClose,
}
