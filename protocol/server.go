package protocol

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/connlimit"
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
type Server struct {
	Handler   *Handler
	TLSConfig *tls.Config
	// ReadHeaderTimeout bounds the upgrade request's arrival (against
	// slowloris clients); DefaultReadHeaderTimeout if 0.
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

	once sync.Once
	srv  http.Server
	lim  *connlimit.Limiter
}

// netConnKey is the request context key of the connection a request came
// on, for the Handler to admit it to the Limiter.
type netConnKey struct{}

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
		s.srv.Handler = s.Handler
		s.srv.ReadHeaderTimeout = orDefault(s.ReadHeaderTimeout, DefaultReadHeaderTimeout)
		s.srv.ReadTimeout = s.srv.ReadHeaderTimeout // the upgrade has no body
		s.srv.MaxHeaderBytes = s.MaxHeaderBytes
		if s.srv.MaxHeaderBytes <= 0 {
			s.srv.MaxHeaderBytes = DefaultMaxHeaderBytes
		}
		s.srv.ErrorLog = slog.NewLogLogger(s.Handler.logger().Handler(), slog.LevelWarn)
		s.srv.TLSConfig = s.TLSConfig
		s.srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, netConnKey{}, c)
		}
		s.lim = s.Limiter
		if s.lim == nil {
			s.lim = &connlimit.Limiter{Logger: s.Handler.logger()}
		}
	})
	l = s.lim.Listen(l)
	if s.TLSConfig != nil {
		return s.srv.ServeTLS(l, "", "")
	}
	return s.srv.Serve(l)
}

// Shutdown stops accepting connections, then shuts the Handler down:
// every slave connection is dropped and its goroutine waited for, until
// ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.Handler == nil {
		return s.srv.Shutdown(ctx)
	}
	return errors.Join(s.srv.Shutdown(ctx), s.Handler.Shutdown(ctx))
}

// Close stops accepting connections and closes the Handler.
func (s *Server) Close() error {
	if s.Handler == nil {
		return s.srv.Close()
	}
	return errors.Join(s.srv.Close(), s.Handler.Close())
}
