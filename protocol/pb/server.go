package pb

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/protocol/internal/listeners"
	"github.com/buildslave/buildslave/protocol/internal/runqueue"
	"github.com/buildslave/buildslave/slave"
)

// Manager is what a Server needs of the slave manager; *slave.Manager
// implements it.
type Manager interface {
	// Login checks a login and holds the name until ctx ends, so that
	// one connection per name is past login and not yet attached; any
	// error refuses it. It logs the refusal itself.
	Login(ctx context.Context, name string, proof slave.Proof, remoteAddr string) error
	// Attach registers an authenticated, set-up connection; an error
	// refuses it.
	Attach(ctx context.Context, name string, c slave.Conn) error
	// GracefulShutdown is what a slave's own shutdown request asks for.
	GracefulShutdown(name string) error
}

var _ Manager = (*slave.Manager)(nil)

// Defaults for the zero values of Server's fields.
const (
	DefaultLoginTimeout  = 10 * time.Second
	DefaultStepTimeout   = 10 * time.Second
	DefaultAttachTimeout = time.Minute
	DefaultMaxAttaching  = 256
	// DefaultBuilder is the builder a command without Request.Builder runs
	// under: PB slaves run commands only for builders the master named.
	DefaultBuilder = "buildslave"
)

// Server is the master side of Perspective Broker, the protocol every
// Buildbot slave speaks by default: buildbot-worker 3.x created without
// --protocol, and the 0.8-era buildslaves. Each connection logs in with
// PB's challenge-response (the password never travels), is set up as the
// stock master does (print, getWorkerInfo with the 0.8 fallbacks,
// setBuilderList) and registered with the Manager as a *Conn. Set Manager;
// the other fields are optional and must not change once serving starts.
//
// Every connection is handled on its own, with a deadline on each step;
// once attached it costs one goroutine, which reads its messages.
type Server struct {
	Manager Manager
	// Builders are registered on each slave when it attaches (setBuilderList
	// with each name as its directory); others are added when a command
	// names them.
	Builders []string
	// LoginTimeout bounds the time from connect to a login answered;
	// DefaultLoginTimeout if 0.
	LoginTimeout time.Duration
	// StepTimeout bounds each request of the attach sequence;
	// DefaultStepTimeout if 0.
	StepTimeout time.Duration
	// AttachTimeout bounds the whole attach sequence, including the
	// manager's check of a duplicate name; DefaultAttachTimeout if 0.
	AttachTimeout time.Duration
	// MaxAttaching bounds how many logged-in connections run their attach
	// sequence at once; the others wait their turn in arrival order,
	// holding no goroutine of their own, and their sequence's deadlines
	// start with it. A storm of slaves dialing at once then takes the
	// memory of MaxAttaching attaches in flight, not of every slave's.
	// With slaves far away, raise it. DefaultMaxAttaching if 0.
	MaxAttaching int
	// Broker bounds what a peer may send and hold. Broker.Budget nil
	// means a memory budget of budget.DefaultSize of the Server's own,
	// shared by its connections' messages.
	Broker BrokerConfig
	// Limiter caps the connections that have not logged in yet, in total
	// and per remote address, and waits out accept errors such as running
	// out of file descriptors; a connection stops counting once its login
	// is verified. Nil means a connlimit.Limiter with the defaults,
	// logging to Logger. A master with several transports gives them one
	// Limiter: they share one file limit.
	Limiter *connlimit.Limiter
	// Logger gets one line per connection that fails or misbehaves;
	// slog.Default() if nil.
	Logger *slog.Logger

	listeners listeners.Set
	mu        sync.Mutex
	lim       *connlimit.Limiter
	budget    *budget.Budget // Broker.Budget, or the Server's own
	conns     map[*Broker]struct{}
	closed    bool
	wg        sync.WaitGroup // a count per connection until it ends
	attaching runqueue.Queue // attach sequences, MaxAttaching at a time
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pb: server closed")

// errServerShutdown is the cause of connections closed by Shutdown.
var errServerShutdown = errors.New("master shutting down")

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// ListenAndServe listens on the TCP address addr and calls Serve.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve accepts connections on l until Shutdown or Close, and returns
// ErrServerClosed then. It closes l. Connections are capped and accept
// errors waited out by the Limiter.
func (s *Server) Serve(l net.Listener) error {
	if s.Manager == nil {
		l.Close()
		return errors.New("pb: Server.Manager is nil: set it to the *slave.Manager the slaves log in to")
	}
	s.mu.Lock()
	if s.lim == nil {
		s.lim = s.Limiter
		if s.lim == nil {
			s.lim = &connlimit.Limiter{Logger: s.logger()}
		}
		s.budget = s.Broker.Budget
		if s.budget == nil {
			s.budget = budget.New(0, 0)
		}
	}
	l = s.lim.Listen(l)
	s.mu.Unlock()
	return s.listeners.Serve(l, ErrServerClosed, s.start)
}

// start runs a connection on a goroutine of its own unless the server is
// closed.
func (s *Server) start(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.b.CloseWithCause(errServerShutdown)
		return
	}
	if s.conns == nil {
		s.conns = map[*Broker]struct{}{}
	}
	s.conns[c.b] = struct{}{}
	s.wg.Add(1)
	go c.serve(func() {
		s.mu.Lock()
		delete(s.conns, c.b)
		s.mu.Unlock()
		s.wg.Done()
	})
}

// Shutdown stops accepting connections, drops every open one and waits
// for their goroutines, or returns ctx's error at its deadline. Running
// builds learn of the loss through the manager; to let them finish first,
// shut the manager down before the server.
func (s *Server) Shutdown(ctx context.Context) error {
	s.listeners.Close()
	s.mu.Lock()
	s.closed = true
	for b := range s.conns {
		b.CloseWithCause(errServerShutdown)
	}
	s.mu.Unlock()
	return listeners.Wait(ctx, &s.wg)
}

// Close is Shutdown without a deadline: connections end promptly once
// dropped.
func (s *Server) Close() error { return s.Shutdown(context.Background()) }

// attach runs f, a connection's attach sequence, once its turn comes:
// at most MaxAttaching run at once.
func (s *Server) attach(f func()) {
	limit := s.MaxAttaching
	if limit <= 0 {
		limit = DefaultMaxAttaching
	}
	s.attaching.Go(limit, f)
}
