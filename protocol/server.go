package protocol

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults for the zero values of Server's fields.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultMaxHeaderBytes    = 8 << 10
)

// Server serves a Handler on a listener with the limits an endpoint facing
// the network needs: a slow or silent client is dropped before its upgrade
// completes, and headers are small. Set Handler; set TLSConfig (with a
// certificate) to serve wss:// instead of ws://.
type Server struct {
	Handler   *Handler
	TLSConfig *tls.Config
	// ReadHeaderTimeout bounds the upgrade request's arrival (against
	// slowloris clients); DefaultReadHeaderTimeout if 0.
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds the upgrade request's headers;
	// DefaultMaxHeaderBytes if 0.
	MaxHeaderBytes int

	once sync.Once
	srv  http.Server
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
// http.ErrServerClosed then. It closes l.
// It may be called on several listeners; the fields are read once, by the
// first call.
func (s *Server) Serve(l net.Listener) error {
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
	})
	if s.TLSConfig != nil {
		return s.srv.ServeTLS(l, "", "")
	}
	return s.srv.Serve(l)
}

// Shutdown stops accepting connections, then shuts the Handler down:
// every slave connection is dropped and its goroutine waited for, until
// ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	return errors.Join(s.srv.Shutdown(ctx), s.Handler.Shutdown(ctx))
}

// Close stops accepting connections and closes the Handler.
func (s *Server) Close() error {
	return errors.Join(s.srv.Close(), s.Handler.Close())
}
