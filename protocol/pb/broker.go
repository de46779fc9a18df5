package pb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/internal/idle"
	"github.com/buildslave/buildslave/protocol/internal/trywrite"
)

// protocolVersion is PB's version, exchanged first by both sides.
const protocolVersion = 6

// Defaults for the zero values of BrokerConfig.
const (
	DefaultMaxObjects   = 1024 // Twisted's MAX_BROKER_REFS
	DefaultWriteTimeout = 30 * time.Second
)

// Object is one of our objects that the peer may call methods on:
// Twisted's Referenceable. Sending an Object in a call's arguments or an
// answer gives the peer a reference to it.
type Object interface {
	// Call runs method with the peer's arguments and returns the answer
	// or the error the peer gets. It runs on the connection's reader, so
	// calls on one connection are handled in the order they arrive; it
	// must not wait for the peer: work that does returns a Later.
	Call(method string, args Tuple, kw map[string]any) (any, error)
}

// Later is what an Object's Call returns for work that waits for the
// peer: the broker runs it on a goroutine of its own and answers with its
// result. Its context ends with the connection.
type Later func(ctx context.Context) (any, error)

// afterCalls is a Later's result whose answer goes out in one write with
// the calls that calls sends first (whose answers nobody waits for): the
// last print of an attach travels with the answer to the slave's login.
type afterCalls struct {
	result any
	calls  func() error
}

// ErrClosed is the cause of a connection closed by our side.
var ErrClosed = errors.New("pb: connection closed")

// BrokerConfig sets a Broker's limits.
type BrokerConfig struct {
	Limits Limits
	// Budget, if set, is memory shared with other connections that each
	// message reserves from while it is decoded and handled: past its
	// first 256 KiB, at once, what the largest message may take (Limits);
	// it holds what it took until handled, and waits for its share when
	// the budget is spent. Nil means none: each connection is bounded on
	// its own. Server gives its connections one.
	Budget *budget.Budget
	// MaxObjects bounds how many of our objects the peer may hold
	// references to; DefaultMaxObjects if 0.
	MaxObjects int
	// WriteTimeout bounds each write; DefaultWriteTimeout if 0.
	WriteTimeout time.Duration
}

// Broker is one PB connection: it calls methods on the peer's objects and
// answers the peer's calls on ours. Both sides of PB use it.
type Broker struct {
	conn net.Conn
	cfg  BrokerConfig
	dec  decoder

	ctx    context.Context
	cancel context.CancelCauseFunc
	later  sync.WaitGroup // running Laters
	// runLater runs a Later's work; nil means on a goroutine of its own.
	// A Server runs them through its queue of attach sequences.
	runLater func(func())

	// parked parks an idle server connection (see Go); nil on a client's
	// or where it cannot.
	parked *idle.Watcher

	wmu     sync.Mutex       // serialises writes
	w       *trywrite.Writer // of conn; under wmu
	wbuf    []byte
	holding bool // wbuf holds messages to send together (together)

	mu      sync.Mutex
	objects map[int64]*local // our objects the peer holds, by number
	numbers map[Object]int64
	lastID  int64
	root    Object // what the peer reaches as "root"; nil on the client side
	pending map[int64]chan reply
	lastReq int64
}

type local struct {
	obj  Object
	refs int // references the peer holds
}

type reply struct {
	v   any
	err error
}

// newBroker returns a Broker on conn; root is the object the peer calls
// as "root" (nil if the peer must not call any).
func newBroker(conn net.Conn, cfg BrokerConfig, root Object) *Broker {
	if cfg.MaxObjects <= 0 {
		cfg.MaxObjects = DefaultMaxObjects
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	b := &Broker{conn: conn, w: trywrite.New(conn), cfg: cfg, root: root,
		objects: map[int64]*local{}, numbers: map[Object]int64{}, pending: map[int64]chan reply{}}
	b.ctx, b.cancel = context.WithCancelCause(context.Background())
	b.dec = decoder{reader: newReader(conn, cfg.Limits, cfg.Budget.Reserve(b.ctx)), res: b, refs: map[int64]any{}}
	if root != nil {
		b.parked = idle.Watch(conn)
	}
	return b
}

// Context is cancelled when the connection ends; context.Cause says why.
func (b *Broker) Context() context.Context { return b.ctx }

// RemoteAddr is the peer's address.
func (b *Broker) RemoteAddr() string { return b.conn.RemoteAddr().String() }

// CloseWithCause ends the connection; calls waiting for answers fail with
// cause.
func (b *Broker) CloseWithCause(cause error) {
	b.cancel(cause)
	b.conn.Close()
	b.parked.Close()
}

// Close ends the connection with ErrClosed.
func (b *Broker) Close() error {
	b.CloseWithCause(ErrClosed)
	return nil
}

// Root returns a reference to the peer's root object.
func (b *Broker) Root() *Ref { return &Ref{b: b, root: true} }

// handshake runs banana's dialect negotiation and PB's version exchange:
// the server offers ["pb", "none"], the client picks "pb", then each side
// sends ["version", 6].
func (b *Broker) handshake(server bool) error {
	w := writer{}
	if server {
		w.list(2)
		w.atom("pb")
		w.atom("none")
	} else {
		if err := b.expectDialects(); err != nil {
			return err
		}
		w.atom("pb")
	}
	w.vocab = true
	w.list(2)
	w.atom("version")
	w.int(protocolVersion)
	if err := b.write(w.b); err != nil {
		return err
	}
	if server {
		if err := b.expectDialect(); err != nil {
			return err
		}
	}
	msg, err := b.dec.message()
	if err != nil {
		return err
	}
	return checkVersion(msg)
}

// expectDialects reads the server's list of dialects and checks it offers "pb".
func (b *Broker) expectDialects() error {
	d := &b.dec
	d.begin()
	n, typ, err := d.token()
	if err != nil {
		return err
	}
	if typ != tokList || n > 16 {
		return d.errorf(ErrMalformed, "dialect offer is not a short list")
	}
	found := false
	for range n {
		a, err := d.atom()
		if err != nil {
			return err
		}
		found = found || string(a) == "pb"
	}
	if !found {
		return d.errorf(ErrMalformed, `the peer does not offer the "pb" dialect`)
	}
	return nil
}

// expectDialect reads the client's choice of dialect, which must be "pb".
func (b *Broker) expectDialect() error {
	d := &b.dec
	d.begin()
	a, err := d.atom()
	if err != nil {
		return err
	}
	if string(a) != "pb" {
		return d.errorf(ErrMalformed, "the peer chose dialect %q, want \"pb\"", truncate(a, 32))
	}
	return nil
}

func checkVersion(msg []any) error {
	if len(msg) != 2 || text(msg[0]) != "version" {
		return fmt.Errorf("%w: first message is not [version, N]", ErrMalformed)
	}
	if v, _ := msg[1].(int64); v != protocolVersion {
		return fmt.Errorf("%w: PB version %v, want %d", ErrMalformed, msg[1], protocolVersion)
	}
	return nil
}

// Serve reads and dispatches the peer's messages until the connection
// ends, and returns why it ended; it waits for the Laters it started.
// Server runs it for each connection; a client runs it after Connect.
func (b *Broker) Serve() error {
	for {
		if err := b.serveOne(false); err != nil {
			return b.finish(err)
		}
	}
}

// Go is Serve for a server holding many idle connections: it reads and
// dispatches messages on goroutines of its own until the connection ends,
// then calls end with what Serve would return. An idle server connection
// holds no goroutine and no buffer: it is parked with the process's
// poller (package idle) and a new goroutine reads its next message once
// its bytes are there. Where the poller cannot park it, a goroutine that
// read a message and has no more bytes of the next one leaves the wait
// for them to a new goroutine, so that no idle connection keeps the stack
// that reading grew (a goroutine's stack, once grown, does not shrink back
// to the smallest size): neither one attached, nor one whose attach waits
// its turn (Server.MaxAttaching) after a storm of logins.
func (b *Broker) Go(end func(cause error)) {
	var resume func()
	resume = func() { b.serveFrom(end, resume, true) }
	go b.serveFrom(end, resume, false)
}

// serveFrom reads and dispatches messages; ready means the poller resumed
// the connection (as resume): the socket has bytes to read, or has ended.
func (b *Broker) serveFrom(end func(cause error), resume func(), ready bool) {
	for {
		if !ready && !b.dec.buffered() && b.parked.Park(resume) {
			return
		}
		if err := b.serveOne(ready); err != nil {
			end(b.finish(err))
			return
		}
		ready = false
		if !b.dec.buffered() && b.parked == nil {
			go b.serveFrom(end, resume, false)
			return
		}
	}
}

// serveOne reads and dispatches one message.
func (b *Broker) serveOne(ready bool) error {
	err := b.dec.await(ready)
	var msg []any
	if err == nil {
		msg, err = b.dec.message()
	}
	if err == nil {
		err = b.dispatch(msg)
	}
	b.dec.release()
	return err
}

// finish ends the connection with cause err once it can read no more,
// waits for its Laters and fails the calls waiting for answers; it
// returns the connection's cause.
func (b *Broker) finish(err error) error {
	b.CloseWithCause(err)
	b.dec.drop()
	b.later.Wait()
	b.failPending()
	return context.Cause(b.ctx)
}

func (b *Broker) failPending() {
	b.mu.Lock()
	pending := b.pending
	b.pending = map[int64]chan reply{}
	b.mu.Unlock()
	for _, ch := range pending {
		ch <- reply{err: fmt.Errorf("connection lost: %w", context.Cause(b.ctx))}
	}
}

// dispatch handles one message from the peer. Any error ends the
// connection: a peer that names objects or requests we do not know is
// confused or hostile.
func (b *Broker) dispatch(msg []any) error {
	switch cmd := text(msg[0]); cmd {
	case "message":
		return b.message(msg)
	case "answer", "error":
		if len(msg) != 3 {
			return fmt.Errorf("%w: %s with %d elements", ErrMalformed, cmd, len(msg))
		}
		id, ok := msg[1].(int64)
		if !ok {
			return fmt.Errorf("%w: %s's request id is %s", ErrMalformed, cmd, typeName(msg[1]))
		}
		b.mu.Lock()
		ch := b.pending[id]
		delete(b.pending, id)
		b.mu.Unlock()
		if ch == nil {
			return fmt.Errorf("%w: %s to request %d, which is not waiting", ErrMalformed, cmd, id)
		}
		if cmd == "answer" {
			ch <- reply{v: msg[2]}
			return nil
		}
		err, ok := msg[2].(*RemoteError)
		if !ok {
			err = &RemoteError{Type: "unknown", Value: fmt.Sprint(msg[2])}
		}
		ch <- reply{err: err}
		return nil
	case "decref":
		if len(msg) != 2 {
			return fmt.Errorf("%w: decref with %d elements", ErrMalformed, len(msg))
		}
		id, _ := msg[1].(int64)
		b.mu.Lock()
		defer b.mu.Unlock()
		l := b.objects[id]
		if l == nil {
			return fmt.Errorf("%w: decref of object %v, which the peer does not hold", ErrMalformed, msg[1])
		}
		if l.refs--; l.refs == 0 {
			delete(b.objects, id)
			delete(b.numbers, l.obj)
		}
		return nil
	case "version":
		return checkVersion(msg)
	default:
		return fmt.Errorf("%w: unsupported PB command %q", ErrMalformed, truncate([]byte(cmd), 32))
	}
}

// message handles a call from the peer:
// [message, requestID, objectID, method, answerRequired, args, kw].
func (b *Broker) message(msg []any) error {
	if len(msg) != 7 {
		return fmt.Errorf("%w: message with %d elements, want 7", ErrMalformed, len(msg))
	}
	id, ok1 := msg[1].(int64)
	method, ok2 := msg[3].([]byte)
	answer, ok3 := msg[4].(int64)
	args, ok4 := msg[5].(Tuple)
	kw, ok5 := msg[6].(map[string]any)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return fmt.Errorf("%w: message fields of the wrong types", ErrMalformed)
	}
	var obj Object
	switch target := msg[2].(type) {
	case []byte:
		if string(target) == "root" {
			obj = b.root
		}
	case int64:
		b.mu.Lock()
		if l := b.objects[target]; l != nil {
			obj = l.obj
		}
		b.mu.Unlock()
	}
	if obj == nil {
		return fmt.Errorf("%w: call of %q on object %v, which the peer does not hold", ErrMalformed, truncate(method, 32), printable(msg[2]))
	}
	result, err := obj.Call(string(method), args, kw)
	if later, ok := result.(Later); ok && err == nil {
		run := func() {
			defer b.later.Done()
			v, err := later(b.ctx)
			switch f, ok := v.(afterCalls); {
			case answer == 0:
			case ok && err == nil:
				b.together(func() error {
					if err := f.calls(); err != nil {
						return err
					}
					return b.answer(id, f.result, nil)
				})
			default:
				b.answer(id, v, err)
			}
		}
		b.later.Add(1)
		if b.runLater != nil {
			b.runLater(run)
		} else {
			go run()
		}
		return nil
	}
	if answer != 0 {
		if err := b.answer(id, result, err); err != nil {
			return err
		}
	}
	if errors.Is(err, ErrMalformed) {
		return err // answered, and the connection ends
	}
	return nil
}

// printable shows an object id from the peer in an error message.
func printable(v any) string {
	if b, ok := v.([]byte); ok {
		return fmt.Sprintf("%q", truncate(b, 32))
	}
	return fmt.Sprint(v)
}

// answer sends the answer to the peer's request id, or the error.
func (b *Broker) answer(id int64, v any, err error) error {
	var ft *fatal
	if errors.As(err, &ft) {
		defer b.CloseWithCause(ft.err)
		err = ft.f
	}
	return b.send(func(e *encoder) error {
		if err != nil {
			var f *failure
			if !errors.As(err, &f) {
				f = &failure{parents: excError, text: err.Error()}
			}
			e.list(3)
			e.atom("error")
			e.int(id)
			return e.failure(f)
		}
		e.list(3)
		e.atom("answer")
		e.int(id)
		return e.value(v)
	})
}

// send encodes one message with enc and writes it.
func (b *Broker) send(enc func(*encoder) error) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	start := 0
	if b.holding {
		start = len(b.wbuf) // after the messages held
	}
	e := encoder{writer: writer{b: b.wbuf[:start], vocab: true}, reg: b}
	err := enc(&e)
	switch {
	case err != nil:
		e.b = e.b[:start]
	case b.holding:
		b.wbuf = e.b
		return nil
	default:
		err = b.write(e.b)
	}
	if cap(e.b) <= 64<<10 {
		b.wbuf = e.b[:0] // keep small buffers for the next message
	} else {
		b.wbuf = nil
	}
	return err
}

// together sends the messages f sends in one write, when f returns: a
// peer that answers each then gets them in one packet, and each end makes
// one system call for them. Messages sent meanwhile on other goroutines
// go with them. f must not wait for an answer.
func (b *Broker) together(f func() error) error {
	b.wmu.Lock()
	b.holding = true
	b.wmu.Unlock()
	err := f()
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.holding = false
	if len(b.wbuf) > 0 {
		if werr := b.write(b.wbuf); err == nil {
			err = werr
		}
		b.wbuf = b.wbuf[:0]
	}
	return err
}

// write writes p under WriteTimeout, which the connection has only while
// a write waits (see trywrite); the caller holds wmu.
func (b *Broker) write(p []byte) error {
	_, err := b.w.Write(p, time.Now().Add(b.cfg.WriteTimeout))
	if err != nil {
		b.CloseWithCause(fmt.Errorf("write: %w", err))
		return fmt.Errorf("connection lost: %w", context.Cause(b.ctx))
	}
	return nil
}

// register gives obj a number the peer can call it by, counting one more
// reference the peer holds.
func (b *Broker) register(obj Object) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if id, ok := b.numbers[obj]; ok {
		b.objects[id].refs++
		return id, nil
	}
	if len(b.objects) >= b.cfg.MaxObjects {
		return 0, fmt.Errorf("pb: the peer holds %d objects already (MaxObjects)", len(b.objects))
	}
	b.lastID++
	b.objects[b.lastID] = &local{obj: obj, refs: 1}
	b.numbers[obj] = b.lastID
	return b.lastID, nil
}

func (b *Broker) owns(r *Ref) bool { return r.b == b && !r.root }

func (b *Broker) remoteRef(id int64) (*Ref, error) { return &Ref{b: b, id: id}, nil }

func (b *Broker) localObject(id int64) (Object, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l := b.objects[id]; l != nil {
		return l.obj, nil
	}
	return nil, fmt.Errorf("%w: reference to our object %d, which the peer does not hold", ErrMalformed, id)
}

// Ref is a reference to an object of the peer: Twisted's RemoteReference.
type Ref struct {
	b    *Broker
	id   int64
	root bool
}

// Call calls method on the object and waits for the answer: the value, a
// *RemoteError if it failed on the peer, the connection's loss, or ctx's
// end. Args and kw may hold nil, bool, integers, float64, string, []byte,
// []any, []string, Tuple, map[string]any, map[string]string, Objects and
// *Refs of this connection.
func (r *Ref) Call(ctx context.Context, method string, args Tuple, kw map[string]any) (any, error) {
	p, err := r.send(method, args, kw)
	if err != nil {
		return nil, err
	}
	return p.wait(ctx)
}

// pendingCall is a call sent whose answer has not been waited for.
type pendingCall struct {
	b  *Broker
	ch chan reply
}

// send sends a call of method on the object; wait for its answer with the
// pendingCall's wait.
func (r *Ref) send(method string, args Tuple, kw map[string]any) (*pendingCall, error) {
	b := r.b
	ch := make(chan reply, 1)
	b.mu.Lock()
	b.lastReq++
	id := b.lastReq
	b.pending[id] = ch // stays until answered, so a late answer is expected
	b.mu.Unlock()
	if args == nil {
		args = Tuple{}
	}
	if kw == nil {
		kw = map[string]any{}
	}
	err := b.send(func(e *encoder) error {
		e.list(7)
		e.atom("message")
		e.int(id)
		if r.root {
			e.atom("root")
		} else {
			e.int(r.id)
		}
		e.atom(method)
		e.int(1)
		if err := e.value(args); err != nil {
			return err
		}
		return e.value(kw)
	})
	if err != nil {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return nil, err
	}
	return &pendingCall{b, ch}, nil
}

// wait waits for the call's answer, as Call does.
func (p *pendingCall) wait(ctx context.Context) (any, error) {
	select {
	case rep := <-p.ch:
		return rep.v, rep.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-p.b.ctx.Done():
		select {
		case rep := <-p.ch: // answered just before the end
			return rep.v, rep.err
		default:
			return nil, fmt.Errorf("connection lost: %w", context.Cause(p.b.ctx))
		}
	}
}

// Broker is the connection the object is reached through.
func (r *Ref) Broker() *Broker { return r.b }

// Release tells the peer we no longer hold this reference.
func (r *Ref) Release() error {
	if r.root {
		return nil
	}
	return r.b.send(func(e *encoder) error {
		e.list(2)
		e.atom("decref")
		e.int(r.id)
		return nil
	})
}

// IsNoSuchMethod reports whether err is the peer's answer that the object
// has no such method.
func IsNoSuchMethod(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Type == excNoSuchMethod[0]
}
