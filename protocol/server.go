package protocol

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/protocol/internal/listeners"
)

// Defaults for the zero values of Server's fields.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultMaxHeaderBytes    = 8 << 10
)

// Server serves a Handler on a listener with the limits an endpoint facing
// the network needs: a slow or silent client is dropped before its upgrade
// completes, headers are small, and connections that have not logged in
// yet are capped in total and per address (Limiter) so that they cannot
// take the file descriptors attached slaves need. Set Handler (Serve
// refuses to start without one, or without its Manager); set
// TLSConfig (with a certificate) to serve wss:// instead of ws://.
//
// It reads each connection's one HTTP request itself rather than through
// net/http's server, which would give every connection 8 KiB of buffers
// until its upgrade: it answers a request that is not an upgrade, or a
// refused login, and closes the connection (no keep-alive; HTTP/1.1
// only).
type Server struct {
	Handler   *Handler
	TLSConfig *tls.Config
	// ReadHeaderTimeout bounds the upgrade request's arrival (against
	// slowloris clients) and the answer to it; DefaultReadHeaderTimeout
	// if 0.
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds the upgrade request's headers;
	// DefaultMaxHeaderBytes if 0.
	MaxHeaderBytes int
	// Limiter caps the connections that have not logged in yet, in total
	// and per remote address, and waits out accept errors such as running
	// out of file descriptors; a connection stops counting once its
	// upgrade succeeds. Nil means a connlimit.Limiter with the defaults,
	// logging to the Handler's Logger. A master with several transports
	// gives them one Limiter: they share one file limit.
	Limiter *connlimit.Limiter

	once      sync.Once
	tls       *tls.Config // TLSConfig limited to HTTP/1.1
	lim       *connlimit.Limiter
	listeners listeners.Set
	mu        sync.Mutex
	closed    bool
	conns     map[net.Conn]struct{} // not upgraded yet
	wg        sync.WaitGroup        // a goroutine per connection until its upgrade
}

// ErrNoHandler is wrapped by the error Serve and ListenAndServe return for
// a Server whose Handler, or the Handler's Manager, is not set.
var ErrNoHandler = errors.New("protocol: Server.Handler is nil: set it to a *protocol.Handler with a Manager")

// check returns an error wrapping ErrNoHandler, naming the field to set,
// if the Server cannot serve.
func (s *Server) check() error {
	if s.Handler == nil {
		return ErrNoHandler
	}
	if s.Handler.Manager == nil {
		return fmt.Errorf("protocol: Server.Handler.Manager is nil: set it to the slave.Manager slaves attach to (%w)", ErrNoHandler)
	}
	if c := s.TLSConfig; c != nil && len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil {
		return errors.New("protocol: Server.TLSConfig has no certificate: set Certificates or GetCertificate")
	}
	return nil
}

// ListenAndServe listens on the TCP address addr and calls Serve. A
// Server with no Handler (or a Handler with no Manager) returns an error
// wrapping ErrNoHandler without listening.
func (s *Server) ListenAndServe(addr string) error {
	if err := s.check(); err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve accepts connections on l until Shutdown or Close, and returns
// http.ErrServerClosed then. It closes l.
// It may be called on several listeners; the fields are read once, by the
// first call. A Server with no Handler (or a Handler with no Manager)
// serves nothing: Serve closes l and returns an error wrapping
// ErrNoHandler that names the field to set.
func (s *Server) Serve(l net.Listener) error {
	if err := s.check(); err != nil {
		l.Close()
		return err
	}
	s.once.Do(func() {
		if s.TLSConfig != nil {
			s.tls = s.TLSConfig.Clone()
			s.tls.NextProtos = []string{"http/1.1"}
		}
		s.lim = s.Limiter
		if s.lim == nil {
			s.lim = &connlimit.Limiter{Logger: s.Handler.logger()}
		}
	})
	return s.listeners.Serve(s.lim.Listen(l), http.ErrServerClosed, s.start)
}

// start reads the connection's request on a goroutine of its own unless
// the server is closed.
func (s *Server) start(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		nc.Close()
		return
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[nc] = struct{}{}
	s.wg.Go(func() {
		s.serveConn(nc)
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
	})
}

// Shutdown stops accepting connections and drops those not upgraded yet,
// then shuts the Handler down: every slave connection is dropped and its
// goroutine waited for, until ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	s.listeners.Close()
	s.mu.Lock()
	s.closed = true
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	if err := listeners.Wait(ctx, &s.wg); err != nil {
		return err
	}
	if s.Handler == nil {
		return nil
	}
	return s.Handler.Shutdown(ctx)
}

// Close stops accepting connections and closes the Handler.
func (s *Server) Close() error { return s.Shutdown(context.Background()) }
