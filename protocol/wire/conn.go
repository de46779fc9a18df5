package wire

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/buildslave/buildslave/protocol/budget"
)

// Handler answers one request from the peer. It runs on the connection's
// reader goroutine, so requests are handled one at a time in arrival order
// and a Handler must not wait for a Call on the same connection: start a
// goroutine for long work and return. Its result is sent as the response;
// an error is sent as an exception response with the error's text, and an
// error matching ErrMalformed also closes the connection.
type Handler func(ctx context.Context, req Message) (result any, err error)

// ErrUnknownOp is matched by the error a Handler returns for an op it does
// not implement; see UnknownOp.
var ErrUnknownOp = errors.New("unknown op")

// UnknownOp is the error a Handler returns for a request whose op it does
// not implement; the peer gets an exception response naming the op.
func UnknownOp(op string) error { return fmt.Errorf("%w %q", ErrUnknownOp, op) }

// ErrClosed is the cause of a connection closed by Close.
var ErrClosed = errors.New("connection closed")

// RemoteError is the error of a Call the peer answered with an exception.
type RemoteError struct {
	Message string // the peer's error text
}

func (e *RemoteError) Error() string { return "remote error: " + e.Message }

// Conn multiplexes requests and responses over a Transport, for either side
// of the protocol. Messages are msgpack maps: a request {op, seq_number,
// ...} or a response {op: "response", seq_number, result, is_exception?},
// with strings as str and bytes as bin, as the stock Python peers send them. Each side numbers its requests from 0; every request the
// peer sends is answered exactly once; responses are matched to calls by
// seq_number whatever order they come in; text frames are ignored. A peer
// that sends a malformed message, a request out of sequence or a response to
// a request never made is disconnected.
//
// Serve runs the one reader goroutine; Call may be used from any goroutine.
type Conn struct {
	t       Transport
	handler Handler
	limits  DecodeLimits
	ctx     context.Context
	cancel  context.CancelCauseFunc

	wmu     sync.Mutex   // serialises writes and numbering of requests
	nextSeq atomic.Int64 // seq_number of our next request; written under wmu

	mu      sync.Mutex
	pending []pendingCall // calls awaiting their response; few, so a slice

	nextIn int64 // seq_number of the next request from the peer; reader only

	// lead holds a token while nobody reads the connection, while Lead's
	// function runs: a Call or Wait that takes it reads and dispatches
	// messages itself until its own answer. Nil without Lead.
	lead chan struct{}
}

type pendingCall struct {
	seq int64
	ch  chan Message
}

// NewConn returns a connection over t whose peer's requests go to handler.
// Nothing is read until Serve is called. Messages are decoded within the
// DecodeLimits of t's WebSocketConfig, or the defaults for other transports.
func NewConn(t Transport, handler Handler) *Conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Conn{t: t, handler: handler, ctx: ctx, cancel: cancel}
	if l, ok := t.(decodeLimiter); ok {
		c.limits = l.DecodeLimits()
	}
	return c
}

// Context is cancelled when the connection ends; context.Cause says why.
func (c *Conn) Context() context.Context { return c.ctx }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() string { return c.t.RemoteAddr() }

// Close drops the connection with cause ErrClosed. It does not wait.
func (c *Conn) Close() error { return c.CloseWithCause(ErrClosed) }

// CloseWithCause drops the connection; cause becomes the Context's cause
// and Serve's result unless the connection had already ended.
func (c *Conn) CloseWithCause(cause error) error {
	c.cancel(cause)
	return c.t.Close()
}

// Call sends the request {op, seq_number, fields...} and waits for its
// response. It returns the response's result, a *RemoteError if the peer
// answered with an exception, ctx's error, or the connection's cause if
// the connection ends first.
func (c *Conn) Call(ctx context.Context, op string, fields map[string]any) (any, error) {
	p, err := c.Send(op, fields)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Pending is a request sent by Send whose response has not been waited
// for yet.
type Pending struct {
	c   *Conn
	seq int64
	ch  chan Message
}

// Send sends the request {op, seq_number, fields...} and returns without
// waiting for its response: several requests sent before their responses
// are waited for travel together while Lead's function runs. Wait for the
// response of each Pending it returns.
func (c *Conn) Send(op string, fields map[string]any) (*Pending, error) {
	p := &Pending{c: c, ch: make(chan Message, 1)}
	c.wmu.Lock()
	p.seq = c.nextSeq.Load()
	c.mu.Lock()
	c.pending = append(c.pending, pendingCall{p.seq, p.ch})
	c.mu.Unlock()
	err := c.write(func(b []byte) ([]byte, error) { return AppendMessage(b, op, p.seq, fields) })
	if err == nil {
		c.nextSeq.Add(1)
	}
	c.wmu.Unlock()
	if err != nil {
		c.forget(p.seq)
		return nil, err
	}
	return p, nil
}

// Wait waits for the response to the request p and returns it as Call
// does.
func (p *Pending) Wait(ctx context.Context) (any, error) {
	defer p.c.forget(p.seq)
	resp, err := await(p.c, ctx, p.ch)
	if err != nil {
		return nil, err
	}
	return resultOf(resp)
}

// Wait waits until done is closed and returns nil, or returns ctx's cause
// or the connection's. While Lead's function runs, it reads and
// dispatches the peer's messages itself, so done must be closed by
// handling one of them (as a command's completion is), and ctx's end
// then closes the connection.
func (c *Conn) Wait(ctx context.Context, done <-chan struct{}) error {
	_, err := await(c, ctx, done)
	return err
}

// await waits for a value from ch, ctx's end or the connection's end. If
// it takes the lead token, nobody else reads the connection: it reads and
// dispatches messages until ch is ready, and a blocked read ends only by
// closing the connection, which ctx's end then does.
func await[T any](c *Conn, ctx context.Context, ch <-chan T) (T, error) {
	var zero T
	select {
	case v := <-ch:
		return v, nil
	case <-ctx.Done():
		return zero, context.Cause(ctx)
	case <-c.ctx.Done():
		return zero, context.Cause(c.ctx)
	case <-c.lead:
	}
	defer func() { c.lead <- struct{}{} }()
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.CloseWithCause(context.Cause(ctx)) })
		defer stop()
	}
	for {
		select {
		case v := <-ch:
			return v, nil
		default:
		}
		if err := c.readOne(); err != nil {
			c.CloseWithCause(err)
			return zero, context.Cause(c.ctx)
		}
	}
}

// forget removes the pending call seq and returns its channel, if any.
func (c *Conn) forget(seq int64) chan Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.pending, func(p pendingCall) bool { return p.seq == seq })
	if i < 0 {
		return nil
	}
	ch := c.pending[i].ch
	c.pending = slices.Delete(c.pending, i, i+1)
	if len(c.pending) == 0 {
		c.pending = nil // an idle connection holds no array
	}
	return ch
}

func resultOf(resp Message) (any, error) {
	result := resp["result"]
	if exc, _ := resp["is_exception"].(bool); exc {
		text, ok := result.(string)
		if !ok {
			text = fmt.Sprint(result)
		}
		return nil, &RemoteError{Message: text}
	}
	return result, nil
}

// write encodes a message with enc and sends it; the caller holds wmu. A
// failed write ends the connection. An encoding error is returned without
// ending it.
func (c *Conn) write(enc func([]byte) ([]byte, error)) error {
	if err := context.Cause(c.ctx); err != nil {
		return err
	}
	bp := buffers.Get().(*[]byte)
	defer putBuffer(bp)
	b, err := enc((*bp)[:0])
	*bp = b
	if err != nil {
		return err
	}
	if err = c.t.WriteMessage(b); err != nil {
		err = fmt.Errorf("write: %w", err)
		c.CloseWithCause(err)
		return context.Cause(c.ctx)
	}
	return nil
}

// respond answers the peer's request seq.
func (c *Conn) respond(seq int64, result any, herr error) error {
	fields := map[string]any{"result": result}
	if herr != nil {
		fields = map[string]any{"result": herr.Error(), "is_exception": true}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.write(func(b []byte) ([]byte, error) { return AppendMessage(b, "response", seq, fields) })
	if err != nil && c.ctx.Err() == nil {
		// The handler's result cannot be encoded: the peer still gets an answer.
		fields = map[string]any{"result": "internal error: " + err.Error(), "is_exception": true}
		err = c.write(func(b []byte) ([]byte, error) { return AppendMessage(b, "response", seq, fields) })
	}
	return err
}

// buffers holds read and encode buffers between messages, so an idle
// connection holds none.
var buffers = sync.Pool{New: func() any { return new([]byte) }}

// putBuffer returns a buffer to the pool unless it grew too big to keep.
func putBuffer(bp *[]byte) {
	if cap(*bp) <= DefaultMaxMessageSize/8 {
		*bp = (*bp)[:0]
		buffers.Put(bp)
	}
}

// Serve reads and dispatches messages until the connection ends, then
// returns the cause: ErrClosed after Close, an error matching ErrMalformed
// or ErrTooLarge for a misbehaving peer, or the transport's read error. It
// closes the transport before returning. Call it once.
func (c *Conn) Serve() error {
	for {
		if err := c.readOne(); err != nil {
			c.CloseWithCause(err)
			return context.Cause(c.ctx)
		}
	}
}

// Go is Serve for a server holding many idle connections: it reads and
// dispatches messages on goroutines of its own until the connection ends,
// then calls end with the cause, as Serve would return it. Where the
// transport can (the server's end of a WebSocket), an idle connection
// holds no goroutine and no buffer: it is parked with the process's
// poller (package idle) and a new goroutine reads its next message once
// its bytes are there. Where the poller cannot park it, a goroutine reads
// one message, then leaves the next wait to a new one, which waits on the
// smallest stack (a goroutine's stack, once grown, does not shrink back to
// the smallest size).
func (c *Conn) Go(end func(cause error)) {
	var resume func()
	resume = func() { c.serveFrom(end, resume, true) }
	go c.serveFrom(end, resume, false)
}

// serveFrom reads and dispatches messages; ready means the poller resumed
// the connection (as resume): the socket has bytes to read, or has ended.
func (c *Conn) serveFrom(end func(cause error), resume func(), ready bool) {
	idle, _ := c.t.(idleWaiter)
	for {
		if !ready && idle != nil && idle.park(resume) {
			return
		}
		hop := !ready && idle != nil && idle.waitReadable()
		ready = false
		if err := c.readOne(); err != nil {
			c.CloseWithCause(err)
			end(context.Cause(c.ctx))
			return
		}
		if hop {
			go c.serveFrom(end, resume, false)
			return
		}
	}
}

// idleWaiter is a Transport that can wait for its next message on a
// shallow stack, holding no buffer; the server's end of a WebSocket is
// one.
type idleWaiter interface {
	// park arranges for resume to run on a new goroutine once bytes of
	// the next message are there, and reports true; or reports false if
	// it cannot (then resume never runs).
	park(resume func()) bool
	// waitReadable waits until the next message's bytes are there and
	// reports true, or reports false at once if it cannot tell.
	waitReadable() bool
}

// Lead runs first on the calling goroutine before the connection is
// served: a master runs its attach sequence there instead of on a
// goroutine beside the reader. While first runs nobody else reads, so a
// Call or Wait reads and dispatches messages itself until its own answer
// arrives (one at a time, whichever goroutine makes it), and its ctx's
// end closes the connection. Lead returns once no Call reads any more;
// call Serve then. Call Lead at most once, before the Conn is shared and
// before Serve.
//
// While first runs, a transport that can (the server's end of a
// WebSocket) holds what is written until the connection is next read:
// requests sent together with Send, and the answers to the peer's
// requests read meanwhile, go out in one write.
func (c *Conn) Lead(first func()) {
	c.lead = make(chan struct{}, 1)
	c.lead <- struct{}{}
	h, _ := c.t.(holder)
	if h != nil {
		h.hold(true)
	}
	first()
	// Held for good: Serve reads from here on. A Call still reading gives
	// it back once its answer comes or its read fails.
	<-c.lead
	if h != nil {
		if err := h.hold(false); err != nil {
			c.CloseWithCause(fmt.Errorf("write: %w", err))
		}
	}
}

// readOne reads the next message and dispatches it; what the message
// reserved of the transport's memory budget is held until it is handled.
func (c *Conn) readOne() error {
	res := budgetOf(c.t).Reserve(c.ctx)
	defer res.Release()
	msg, err := c.readMessage(&res)
	if err == nil && msg != nil {
		err = c.dispatch(msg)
	}
	return err
}

// readMessage reads the next binary message within res; nil for a text
// frame.
func (c *Conn) readMessage(res *budget.Reservation) (Message, error) {
	bp := buffers.Get().(*[]byte)
	defer putBuffer(bp)
	p, binary, err := readReserved(c.t, *bp, c.limits, res)
	*bp = p
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if !binary {
		return nil, nil
	}
	return c.limits.decodeReserved(p, res)
}

func (c *Conn) dispatch(msg Message) error {
	seq := msg.Seq()
	if msg.Op() == "response" {
		if ch := c.forget(seq); ch != nil {
			ch <- msg
			return nil
		}
		if seq < c.nextSeq.Load() {
			return nil // the call gave up before its answer came
		}
		return fmt.Errorf("%w: response to request %d, which was never sent", ErrMalformed, seq)
	}
	if want := c.nextIn; seq != want {
		return fmt.Errorf("%w: request %q has seq_number %d, want %d", ErrMalformed, msg.Op(), seq, want)
	}
	c.nextIn++
	result, herr := c.handler(c.ctx, msg)
	if err := c.respond(seq, result, herr); err != nil {
		return err
	}
	if errors.Is(herr, ErrMalformed) {
		return fmt.Errorf("request %q: %w", msg.Op(), herr)
	}
	return nil
}
