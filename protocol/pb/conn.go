package pb

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/protocol/internal/attachtimer"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// Conn is one slave's PB connection on the master: the slave.Conn the
// manager holds, and a remote.Commander that runs the build's commands.
// Its methods are safe for concurrent use.
type Conn struct {
	s *Server
	b *Broker

	// Set by the login, before the connection is attached; read-only after.
	name string
	mind *Ref // the slave's bot object
	info slave.Info

	mu       sync.Mutex
	state    loginState
	builders map[string]*Ref       // the slave's objects per builder
	setting  chan struct{}         // closed when a setBuilderList in flight ends
	commands map[string]*pbCommand // running commands by id
	ended    bool
	attached bool   // registered with the manager
	alive    func() // told of the slave's own keepalives
}

type loginState int

const (
	awaitingLogin loginState = iota
	challenged
	responded
)

var (
	_ slave.Conn          = (*Conn)(nil)
	_ slave.AliveReporter = (*Conn)(nil)
	_ remote.Commander    = (*Conn)(nil)
)

func newConn(s *Server, nc net.Conn) *Conn {
	c := &Conn{s: s}
	cfg := s.Broker
	cfg.Budget = s.budget
	c.b = newBroker(nc, cfg, portal{c})
	c.b.runLater = s.attach
	return c
}

// Name is the slave's name, as authenticated.
func (c *Conn) Name() string { return c.name }

// Context is cancelled when the connection ends; context.Cause says why.
func (c *Conn) Context() context.Context { return c.b.Context() }

// Info is what the slave reported about itself when it attached.
func (c *Conn) Info() slave.Info { return c.info }

// RemoteAddr is the slave's address.
func (c *Conn) RemoteAddr() string { return c.b.RemoteAddr() }

// Close drops the connection without waiting for the slave.
func (c *Conn) Close() error { return c.b.Close() }

// Print shows message in the slave's log and waits for its answer.
func (c *Conn) Print(ctx context.Context, message string) error {
	_, err := c.mind.Call(ctx, "print", nil, map[string]any{"message": message})
	return err
}

// Keepalive is the master's keepalive: a print, as the stock master sends.
func (c *Conn) Keepalive(ctx context.Context) error { return c.Print(ctx, "keepalive") }

// RequestShutdown asks the slave process to exit. Slaves older than
// Buildbot 0.8.3 are asked through one of their builders; a slave that
// drops the connection while answering has done what was asked.
func (c *Conn) RequestShutdown(ctx context.Context) error {
	_, err := c.mind.Call(ctx, "shutdown", nil, nil)
	if IsNoSuchMethod(err) {
		c.mu.Lock()
		var b *Ref
		for _, name := range slices.Sorted(maps.Keys(c.builders)) {
			b = c.builders[name]
			break
		}
		c.mu.Unlock()
		if b == nil {
			return err
		}
		_, err = b.Call(ctx, "shutdown", nil, nil)
	}
	if err != nil && c.Context().Err() != nil {
		return nil
	}
	return err
}

// OnAlive has f called each time the slave sends a keepalive of its own.
func (c *Conn) OnAlive(f func()) {
	c.mu.Lock()
	c.alive = f
	c.mu.Unlock()
}

// serve runs the connection until it ends, on this goroutine and then
// others (Broker.Go), logs one line if it failed or misbehaved and calls
// done.
func (c *Conn) serve(done func()) {
	s := c.s
	timeout := orDefault(s.LoginTimeout, DefaultLoginTimeout)
	login := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		waiting := c.state != responded
		c.mu.Unlock()
		if waiting {
			c.b.CloseWithCause(fmt.Errorf("no login within %v", timeout))
		}
	})
	end := func(cause error) {
		defer done()
		login.Stop()
		c.end(cause)
		c.logEnd(cause)
	}
	if err := c.b.handshake(true); err != nil {
		c.b.CloseWithCause(err)
		end(context.Cause(c.Context()))
		return
	}
	c.b.Go(end)
}

// logEnd logs one line if the connection failed or misbehaved. It is not
// part of serve, so that serve's frame stays small on the stack of every
// idle connection.
func (c *Conn) logEnd(cause error) {
	log := c.s.logger().With("remote", c.RemoteAddr())
	if c.name != "" {
		log = log.With("slave", c.name)
	}
	var refused *refusedError
	switch {
	case errors.Is(cause, budget.ErrExhausted):
		log.Warn("slave message got no memory in time; connection dropped", "reason", cause.Error())
	case errors.Is(cause, ErrMalformed), errors.Is(cause, ErrTooLarge):
		log.Warn("slave sent bad input; connection dropped", "reason", cause.Error())
	case errors.As(cause, &refused):
		// The manager logged why.
	case errors.Is(cause, ErrClosed), errors.Is(cause, errServerShutdown):
		log.Debug("slave connection closed", "reason", cause.Error())
	case c.wasAttached():
		log.Info("slave connection ended", "reason", cause.Error())
	default:
		log.Warn("slave attach failed; connection dropped", "reason", cause.Error())
	}
}

func (c *Conn) wasAttached() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attached
}

// end fails every running command with the connection's cause.
func (c *Conn) end(cause error) {
	c.mu.Lock()
	c.ended = true
	commands := c.commands
	c.commands = nil
	c.mu.Unlock()
	for _, cmd := range commands {
		cmd.finish(fmt.Errorf("connection lost: %w", cause))
	}
}

// refusedError is a login or attach the manager refused.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return "login refused: " + e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// portal is the root object a slave logs in through (Twisted's
// _PortalWrapper): login(username) answers a challenge and a challenger.
type portal struct{ c *Conn }

func (p portal) Call(method string, args Tuple, _ map[string]any) (any, error) {
	c := p.c
	if method != "login" {
		return nil, noSuchMethod(method)
	}
	if len(args) != 1 {
		return nil, fmt.Errorf("%w: login takes a username", ErrMalformed)
	}
	name := text(args[0])
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != awaitingLogin {
		return nil, fmt.Errorf("%w: a second login on one connection", ErrMalformed)
	}
	c.state = challenged
	challenge := make([]byte, md5.Size)
	rand.Read(challenge)
	return Tuple{challenge, &challenger{c: c, name: name, challenge: challenge}}, nil
}

// challenger checks the slave's answer to the challenge (Twisted's
// _PortalAuthChallenger): respond(response, mind) logs in and attaches.
type challenger struct {
	c         *Conn
	name      string
	challenge []byte
}

// md5Proof is PB's proof of a password: MD5(MD5(password) + challenge).
type md5Proof struct{ challenge, response []byte }

func (p md5Proof) Proves(password string) bool {
	return subtle.ConstantTimeCompare(Respond(p.challenge, password), p.response) == 1
}

// Respond is PB's answer to a login challenge: MD5(MD5(password) +
// challenge).
func Respond(challenge []byte, password string) []byte {
	h := md5.Sum([]byte(password))
	sum := md5.Sum(append(h[:], challenge...))
	return sum[:]
}

func (ch *challenger) Call(method string, args Tuple, _ map[string]any) (any, error) {
	c := ch.c
	if method != "respond" {
		return nil, noSuchMethod(method)
	}
	response, ok1 := argAt(args, 0).([]byte)
	mind, ok2 := argAt(args, 1).(*Ref)
	if len(args) != 2 || !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: respond takes a response and a mind", ErrMalformed)
	}
	c.mu.Lock()
	again := c.state != challenged
	c.state = responded
	c.mu.Unlock()
	if again {
		return nil, fmt.Errorf("%w: a second respond on one connection", ErrMalformed)
	}
	// The name is held for this connection until its attach is over.
	attaching, attached := context.WithCancel(c.Context())
	if err := c.s.Manager.Login(attaching, ch.name, md5Proof{ch.challenge, response}, c.RemoteAddr()); err != nil {
		attached()
		return nil, &fatal{&refusedError{err}, &failure{parents: excUnauthorizedLogin}}
	}
	connlimit.Admit(c.b.conn) // logged in: no longer counts against Server.Limiter
	c.name, c.mind = ch.name, mind
	return Later(func(context.Context) (any, error) {
		err := c.attach()
		attached()
		if err != nil {
			return nil, &fatal{err, &failure{parents: excUnauthorizedLogin, text: err.Error()}}
		}
		// The stock master's last print, in the write that answers the
		// login: the slave learns both at once, and the attach waits for
		// no round trip more (a dead connection shows at the next call).
		return afterCalls{perspective{c}, func() error {
			_, err := c.mind.send("print", nil, map[string]any{"message": "attached"})
			return err
		}}, nil
	}), nil
}

func argAt(args Tuple, i int) any {
	if i < len(args) {
		return args[i]
	}
	return nil
}

// attach runs the sequence the stock master runs before a slave takes
// builds, then registers the connection with the manager.
func (c *Conn) attach() error {
	s := c.s
	// One timer bounds each step and the whole: it ends the connection,
	// which ends the wait for an answer.
	t := attachtimer.Start(orDefault(s.StepTimeout, DefaultStepTimeout), orDefault(s.AttachTimeout, DefaultAttachTimeout),
		func(cause error) { c.b.CloseWithCause(cause) })
	defer t.Stop()
	ctx := c.Context()
	// print, getWorkerInfo and setBuilderList go out in one write: none
	// needs another's answer. (A 0.8-era slave, which has no
	// getWorkerInfo, is asked for its info the old way after its
	// setBuilderList; its builders do not depend on the info.)
	var printed, info *pendingCall
	var builders *builderList
	if err := c.b.together(func() (err error) {
		if printed, err = c.mind.send("print", nil, map[string]any{"message": "attached"}); err != nil {
			return err
		}
		if info, err = c.mind.send("getWorkerInfo", nil, nil); err != nil {
			return err
		}
		builders, _, err = c.sendBuilders(s.Builders)
		return err
	}); err != nil {
		return fmt.Errorf("print, getWorkerInfo, setBuilderList: %w", err)
	}
	if err := t.Step(`print "attached"`, func() error {
		_, err := printed.wait(ctx)
		return err
	}); err != nil {
		return err
	}
	if err := t.Step("getWorkerInfo", func() (err error) {
		c.info, err = c.workerInfo(ctx, info)
		return err
	}); err != nil {
		return err
	}
	if err := t.Step("setBuilderList", func() error { return builders.finish(ctx) }); err != nil {
		return err
	}
	t.Rest() // the manager's check of a duplicate name
	if err := s.Manager.Attach(ctx, c.name, c); err != nil {
		return &refusedError{err}
	}
	c.mu.Lock()
	c.attached = true
	c.mu.Unlock()
	return nil
}

// workerInfo is what the slave says about itself: the answer to
// getWorkerInfo, sent, or for 0.8-era slaves getSlaveInfo, getCommands and
// getVersion.
func (c *Conn) workerInfo(ctx context.Context, sent *pendingCall) (slave.Info, error) {
	result, err := sent.wait(ctx)
	if IsNoSuchMethod(err) {
		result, err = c.slaveInfo(ctx)
	}
	if err != nil {
		return slave.Info{}, err
	}
	return remote.ParseInfo(Plain(result))
}

func (c *Conn) slaveInfo(ctx context.Context) (any, error) {
	result, err := c.mind.Call(ctx, "getSlaveInfo", nil, nil)
	info, _ := result.(map[string]any)
	switch {
	case IsNoSuchMethod(err):
	case err != nil:
		return nil, err
	case info == nil:
		return nil, fmt.Errorf("%w: getSlaveInfo answered %s", ErrMalformed, typeName(result))
	}
	if info == nil {
		info = map[string]any{}
	}
	if cmds, ok := info["slave_commands"]; ok {
		delete(info, "slave_commands")
		info["worker_commands"] = cmds
		return info, nil
	}
	for _, q := range []struct{ method, key string }{{"getCommands", "worker_commands"}, {"getVersion", "version"}} {
		v, err := c.mind.Call(ctx, q.method, nil, nil)
		switch {
		case IsNoSuchMethod(err):
		case err != nil:
			return nil, err
		default:
			info[q.key] = v
		}
	}
	return info, nil
}

// setBuilders makes sure the slave has a builder of each name: it sends
// setBuilderList with every builder it has and these, one at a time.
func (c *Conn) setBuilders(ctx context.Context, names ...string) error {
	for {
		call, busy, err := c.sendBuilders(names)
		switch {
		case err != nil:
			return err
		case busy != nil:
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		case call == nil:
			return nil
		}
		if err := call.finish(ctx); err != nil {
			return err
		}
	}
}

// builderList is a setBuilderList sent, whose answer gives the slave's
// builders.
type builderList struct {
	c    *Conn
	sent *pendingCall
	done chan struct{} // closed once answered (Conn.setting until then)
}

// sendBuilders sends setBuilderList with every builder the slave has and
// names, unless it has them all (nil, nil) or another is in flight (busy:
// closed once it is over; try again then).
func (c *Conn) sendBuilders(names []string) (call *builderList, busy <-chan struct{}, err error) {
	c.mu.Lock()
	if c.setting != nil {
		busy := c.setting
		c.mu.Unlock()
		return nil, busy, nil
	}
	var want []string
	for name := range c.builders {
		want = append(want, name)
	}
	missing := false
	for _, name := range names {
		if _, ok := c.builders[name]; !ok && !slices.Contains(want, name) {
			want = append(want, name)
			missing = true
		}
	}
	if !missing && c.builders != nil {
		c.mu.Unlock()
		return nil, nil, nil
	}
	call = &builderList{c: c, done: make(chan struct{})}
	c.setting = call.done
	c.mu.Unlock()

	slices.Sort(want)
	list := make([]any, len(want))
	for i, name := range want {
		list[i] = Tuple{name, name}
	}
	if call.sent, err = c.mind.send("setBuilderList", Tuple{list}, nil); err != nil {
		call.end(nil)
		return nil, nil, err
	}
	return call, nil, nil
}

// finish waits for the answer and records the slave's builders.
func (l *builderList) finish(ctx context.Context) error {
	result, err := l.sent.wait(ctx)
	refs, ok := result.(map[string]any)
	if err == nil && !ok {
		err = fmt.Errorf("%w: setBuilderList answered %s", ErrMalformed, typeName(result))
	}
	if err != nil {
		refs = nil
	}
	l.end(refs)
	return err
}

// end records the builders answered, if any, and lets the next
// setBuilderList go.
func (l *builderList) end(refs map[string]any) {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setting = nil
	close(l.done)
	if refs != nil {
		c.builders = make(map[string]*Ref, len(refs))
		for name, v := range refs {
			if ref, ok := v.(*Ref); ok {
				c.builders[name] = ref
			}
		}
	}
}

// builder returns the slave's object for the named builder, registering
// the builder first if the slave lacks it.
func (c *Conn) builder(ctx context.Context, name string) (*Ref, error) {
	if err := c.setBuilders(ctx, name); err != nil {
		return nil, fmt.Errorf("setBuilderList: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ref := c.builders[name]; ref != nil {
		return ref, nil
	}
	return nil, fmt.Errorf("the slave did not take builder %q", name)
}

// perspective is what a logged-in slave calls (Buildbot's Connection):
// keepalive, and shutdown to ask for its own graceful shutdown.
type perspective struct{ c *Conn }

func (p perspective) Call(method string, _ Tuple, _ map[string]any) (any, error) {
	c := p.c
	switch method {
	case "keepalive":
		c.mu.Lock()
		alive := c.alive
		c.mu.Unlock()
		if alive != nil {
			alive()
		}
		return nil, nil
	case "shutdown":
		return nil, c.s.Manager.GracefulShutdown(c.name)
	}
	return nil, noSuchMethod(method)
}

// fatal is an error answered to the peer as f, after which the connection
// is closed with cause err.
type fatal struct {
	err error
	f   *failure
}

func (e *fatal) Error() string { return e.err.Error() }
func (e *fatal) Unwrap() error { return e.err }
