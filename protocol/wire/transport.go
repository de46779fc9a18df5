package wire

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/internal/idle"
	"github.com/buildslave/buildslave/protocol/internal/peek"
	"github.com/gorilla/websocket"
)

// Transport carries whole messages between two peers. The WebSocket
// transport from Upgrader and Dialer is the real one; Pipe gives an
// in-memory pair for tests.
type Transport interface {
	// ReadMessage reads the next message, appending its bytes to dst[:0].
	// binary is false for a text frame, which the protocol ignores.
	ReadMessage(dst []byte) (p []byte, binary bool, err error)
	// WriteMessage sends p as one binary message. Calls are serialised by
	// the caller.
	WriteMessage(p []byte) error
	// Close drops the connection at once; a blocked ReadMessage returns.
	Close() error
	// RemoteAddr is the peer's address.
	RemoteAddr() string
}

// decodeLimiter is a Transport that says how a Conn must bound decoding its
// messages; the WebSocket transport gives its WebSocketConfig.Decode. A Conn
// over any other Transport uses the default DecodeLimits.
type decodeLimiter interface {
	DecodeLimits() DecodeLimits
}

// Defaults for the zero values of the fields of Upgrader and Dialer.
const (
	DefaultMaxMessageSize = 2 << 20
	DefaultWriteTimeout   = 30 * time.Second
	// DefaultBufferSize is small: every connection keeps its read buffer
	// while idle, and larger messages are read past it, straight into the
	// message's own buffer.
	DefaultBufferSize = 256
)

// ErrTooLarge is matched by the error reading a message above the size
// limit.
var ErrTooLarge = errors.New("message too large")

// A WebSocketConfig sets the limits of a WebSocket transport. The zero value
// means the defaults.
type WebSocketConfig struct {
	MaxMessageSize int64         // largest message read; DefaultMaxMessageSize if 0
	WriteTimeout   time.Duration // bound on one write; DefaultWriteTimeout if 0
	// BufferSize is the size of the read buffer (an Upgrader's is at
	// least 257 bytes); DefaultBufferSize if 0.
	BufferSize int
	// Decode bounds the values and memory of each message a Conn reads
	// from the transport, relative to its size; zero fields mean the
	// defaults.
	Decode DecodeLimits
	// Budget, if set, is memory shared with other connections that a
	// Conn's messages reserve from while they are read, decoded and
	// handled: a frame reserves its buffer and its decoding budget
	// (beyond its first 512 KiB, what the largest frame may take, at
	// once) and holds what it took until handled, waiting for its share
	// when the budget is spent. Nil means none: each connection is
	// bounded on its own. protocol.Handler gives its connections one.
	Budget *budget.Budget
}

func (c WebSocketConfig) withDefaults() WebSocketConfig {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.BufferSize <= 0 {
		c.BufferSize = DefaultBufferSize
	}
	return c
}

// writeBuffers is shared by all WebSocket transports, so an idle connection
// holds no write buffer.
var writeBuffers sync.Pool

// Upgrader turns an HTTP upgrade request into a WebSocket transport, the
// way the stock master accepts: no subprotocol, no compression, any origin
// (the peer is a build slave, not a browser).
type Upgrader struct {
	WebSocketConfig
}

// Upgrade completes the handshake on w. On failure it has already replied to
// the client with an HTTP error. The answer to the upgrade goes out with
// the first message written in Conn.Lead, or when the transport is first
// used otherwise.
func (u *Upgrader) Upgrade(w http.ResponseWriter, r *http.Request) (Transport, error) {
	cfg := u.withDefaults()
	up := websocket.Upgrader{
		// 0: read through the hijacker's reader (see hijacker).
		ReadBufferSize:  0,
		WriteBufferPool: &writeBuffers,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	hj := &hijacker{ResponseWriter: w, readSize: max(cfg.BufferSize, minOwnReader)}
	ws, err := up.Upgrade(hj, r, nil)
	if err != nil {
		return nil, err
	}
	hj.release()
	t := newWSTransport(ws, cfg)
	t.held, t.br = hj.held, hj.br
	t.parked = idle.Watch(hj.held.Conn)
	t.handshake.Store(true)
	return t, nil
}

// minOwnReader is the smallest read buffer gorilla/websocket reads through
// when a hijacked connection comes with it, instead of one of its own.
const minOwnReader = 257

// hijacker keeps the buffered reader and writer that net/http hands over
// with a hijacked connection. Once the handshake is written, gorilla/websocket
// reads and writes through buffers of its own, and net/http, which no
// longer uses them either, would keep them (8 KiB) until its handler
// returns: release drops them at once. It gives gorilla/websocket the
// connection as a heldConn, so that Conn.Lead can hold writes, and a
// buffered reader of its own (gorilla/websocket reads through a hijacked
// reader of more than 256 bytes), so that the transport knows when no
// byte waits in it: an idle connection then waits on the socket itself
// (see waitReadable).
type hijacker struct {
	http.ResponseWriter
	readSize int
	brw      *bufio.ReadWriter
	held     *heldConn
	br       *bufio.Reader
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.brw = brw
	if err != nil || brw.Reader.Buffered() > 0 { // refused by gorilla/websocket
		return c, brw, err
	}
	h.held = &heldConn{Conn: c, held: true} // the answer to the upgrade too
	h.br = bufio.NewReaderSize(h.held, h.readSize)
	return h.held, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// release drops the buffers of the hijacked reader and writer.
func (h *hijacker) release() {
	if h.brw != nil {
		*h.brw.Reader = bufio.Reader{}
		*h.brw.Writer = bufio.Writer{}
	}
}

// Dialer opens a slave's connection to a master: a WebSocket upgrade of
// ws://host:port/ (or wss:// with TLSConfig) carrying the slave's name and
// password as HTTP Basic auth.
type Dialer struct {
	WebSocketConfig
	TLSConfig *tls.Config // for wss:// URLs; nil means the system defaults
	// NetDialContext dials the TCP connection; nil means net.Dialer.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// HandshakeError is returned by Dial when the master answers the upgrade
// with an HTTP status other than 101 (401 for refused credentials).
type HandshakeError struct {
	StatusCode int
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("websocket handshake refused: HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Dial connects to url as the slave name with password. The dial, the TLS
// handshake and the upgrade follow ctx: cancelling it makes Dial return at
// once. The upgrade is also bounded by WriteTimeout.
func (d *Dialer) Dial(ctx context.Context, url, name, password string) (Transport, error) {
	cfg := d.withDefaults()
	netDial := d.NetDialContext
	if netDial == nil {
		netDial = (&net.Dialer{}).DialContext
	}
	// gorilla/websocket stops waiting for the upgrade's answer only at its
	// HandshakeTimeout: closing the connection when ctx ends unblocks it.
	stop := func() bool { return true }
	wd := websocket.Dialer{
		NetDialContext: func(dctx context.Context, network, addr string) (net.Conn, error) {
			c, err := netDial(dctx, network, addr)
			if err == nil {
				stop = context.AfterFunc(ctx, func() { c.Close() })
			}
			return c, err
		},
		TLSClientConfig:  d.TLSConfig,
		ReadBufferSize:   cfg.BufferSize,
		WriteBufferPool:  &writeBuffers,
		HandshakeTimeout: cfg.WriteTimeout,
	}
	h := http.Header{"Authorization": {BasicAuth(name, password)}}
	ws, resp, err := wd.DialContext(ctx, url, h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if !stop() { // ctx ended during the upgrade: the connection is closed
		if ws != nil {
			ws.Close()
		}
		return nil, context.Cause(ctx)
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, &HandshakeError{StatusCode: resp.StatusCode}
		}
		return nil, err
	}
	return newWSTransport(ws, cfg), nil
}

// BasicAuth is the value of the Authorization header that carries a slave's
// credentials.
func BasicAuth(name, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+password))
}

type wsTransport struct {
	ws           *websocket.Conn
	writeTimeout time.Duration
	decode       DecodeLimits
	maxSize      int64
	budgetOf     *budget.Budget
	held         *heldConn     // the server's connection; nil on a slave's
	br           *bufio.Reader // what gorilla/websocket reads held through
	parked       *idle.Watcher // parks held's socket while idle; nil if it cannot
	// handshake is set while held holds the answer to the upgrade, until
	// Conn.Lead takes the holding over or the transport is first used:
	// an attach sequence's first requests go out with the answer.
	handshake atomic.Bool
}

var (
	_ decodeLimiter = (*wsTransport)(nil)
	_ budgeted      = (*wsTransport)(nil)
	_ holder        = (*wsTransport)(nil)
	_ idleWaiter    = (*wsTransport)(nil)
)

// park parks the connection with the process's poller until bytes of the
// next message are there, unless they are already, or writes are held
// (they go out at the next read), or the connection cannot be parked.
func (t *wsTransport) park(resume func()) bool {
	if t.br == nil || !t.held.quiet() || t.br.Buffered() > 0 {
		return false
	}
	return t.parked.Park(resume)
}

// waitReadable waits until bytes of the next message are there, in the
// reader or on the socket, and reports true; or reports false at once if
// the connection cannot tell (a TLS connection keeps decrypted bytes of
// its own). A connection that waits here, with a few frames on its
// goroutine's stack, instead of deep in gorilla/websocket's frame reader,
// keeps the smallest stack while idle.
func (t *wsTransport) waitReadable() bool {
	switch {
	case t.br == nil || !t.held.quiet():
		return false
	case t.br.Buffered() > 0:
		return true
	}
	return peek.Wait(t.held.Conn)
}

// hold holds writes on a server's connection; a slave's writes go out
// at once.
func (t *wsTransport) hold(on bool) error {
	if t.held == nil {
		return nil
	}
	t.handshake.Store(false)
	return t.held.hold(on)
}

// answer sends the answer to the upgrade, if it is still held, before the
// transport is first used outside Conn.Lead.
func (t *wsTransport) answer() error {
	if t.handshake.Load() && t.handshake.CompareAndSwap(true, false) {
		return t.held.hold(false)
	}
	return nil
}

func newWSTransport(ws *websocket.Conn, cfg WebSocketConfig) *wsTransport {
	ws.SetReadLimit(cfg.MaxMessageSize)
	return &wsTransport{ws: ws, writeTimeout: cfg.WriteTimeout, decode: cfg.Decode,
		maxSize: cfg.MaxMessageSize, budgetOf: cfg.Budget}
}

func (t *wsTransport) DecodeLimits() DecodeLimits                   { return t.decode }
func (t *wsTransport) budget() *budget.Budget                       { return t.budgetOf }
func (t *wsTransport) ReadMessage(dst []byte) ([]byte, bool, error) { return t.readMessage(dst, nil) }

// readMessage is ReadMessage that calls big, if not nil, before the
// message's buffer grows past unreservedFrame bytes; its error ends the
// read.
func (t *wsTransport) readMessage(dst []byte, big func() error) ([]byte, bool, error) {
	if err := t.answer(); err != nil {
		return dst[:0], false, err
	}
	typ, r, err := t.ws.NextReader()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			err = fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		return dst[:0], false, err
	}
	p, err := readAll(dst[:0], r, big)
	if errors.Is(err, websocket.ErrReadLimit) {
		err = fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return p, typ == websocket.BinaryMessage, err
}

// readAll is io.ReadAll appending to b. It doubles b as it fills, so a
// large message costs twice its size in allocations, not the five times of
// append's gentler growth. It calls big, if not nil, once before b grows
// past unreservedFrame bytes.
func readAll(b []byte, r io.Reader, big func() error) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			if big != nil && cap(b) >= unreservedFrame {
				if err := big(); err != nil {
					return b, err
				}
				big = nil
			}
			b = slices.Grow(b, max(512, cap(b)))
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func (t *wsTransport) WriteMessage(p []byte) error {
	if err := t.answer(); err != nil {
		return err
	}
	if err := t.ws.SetWriteDeadline(time.Now().Add(t.writeTimeout)); err != nil {
		return err
	}
	return t.ws.WriteMessage(websocket.BinaryMessage, p)
}

// Close closes the connection, and resumes it if it is parked: its read
// then fails.
func (t *wsTransport) Close() error {
	err := t.ws.Close()
	t.parked.Close()
	return err
}

func (t *wsTransport) RemoteAddr() string { return t.ws.RemoteAddr().String() }

// Pipe returns the two ends of an in-memory transport. Messages are queued
// without bound, and closing either end closes both. It uses no sockets or
// timers, so it works inside a testing/synctest bubble.
func Pipe() (Transport, Transport) {
	a, b := newQueue(), newQueue()
	done := make(chan struct{})
	var once sync.Once
	closeFn := func() { once.Do(func() { close(done) }) }
	return &pipeEnd{in: a, out: b, done: done, close: closeFn, addr: "pipe-a"},
		&pipeEnd{in: b, out: a, done: done, close: closeFn, addr: "pipe-b"}
}

type queue struct {
	mu    sync.Mutex
	msgs  [][]byte
	ready chan struct{} // holds a token while msgs is non-empty
}

func newQueue() *queue { return &queue{ready: make(chan struct{}, 1)} }

type pipeEnd struct {
	in, out *queue
	done    chan struct{}
	close   func()
	addr    string
}

var errPipeClosed = errors.New("pipe closed")

func (p *pipeEnd) ReadMessage(dst []byte) ([]byte, bool, error) {
	for {
		p.in.mu.Lock()
		if len(p.in.msgs) > 0 {
			m := p.in.msgs[0]
			p.in.msgs = p.in.msgs[1:]
			if len(p.in.msgs) > 0 {
				signal(p.in.ready)
			}
			p.in.mu.Unlock()
			return append(dst[:0], m...), true, nil
		}
		p.in.mu.Unlock()
		select {
		case <-p.in.ready:
		case <-p.done:
			return dst[:0], false, errPipeClosed
		}
	}
}

func (p *pipeEnd) WriteMessage(b []byte) error {
	select {
	case <-p.done:
		return errPipeClosed
	default:
	}
	p.out.mu.Lock()
	p.out.msgs = append(p.out.msgs, append([]byte(nil), b...))
	p.out.mu.Unlock()
	signal(p.out.ready)
	return nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (p *pipeEnd) Close() error       { p.close(); return nil }
func (p *pipeEnd) RemoteAddr() string { return p.addr }
