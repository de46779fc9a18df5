package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/wire"
)

// ErrRefused is returned by Run when the master refused the slave's name
// and password Config.MaxRefusals times in a row.
var ErrRefused = errors.New("client: master refused the slave's credentials")

// shutdownGrace is how long the slave waits, after answering a shutdown
// request, for the answer to leave before it closes the connection.
const shutdownGrace = 200 * time.Millisecond

// Slave is a build slave: Run keeps it attached to its master.
type Slave struct {
	cfg  Config
	url  string
	dial func(ctx context.Context) (wire.Transport, error) // msgpack
	// dialTCP connects to a PB master.
	dialTCP func(ctx context.Context) (net.Conn, error)
}

// New checks cfg and returns a slave ready to Run.
func New(cfg Config) (*Slave, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	url, err := cfg.url()
	if err != nil {
		return nil, err
	}
	d := &wire.Dialer{}
	if strings.HasPrefix(url, "wss://") {
		d.TLSConfig = cfg.tlsConfig("")
	}
	s := &Slave{cfg: cfg, url: url}
	s.dial = func(ctx context.Context) (wire.Transport, error) {
		return d.Dial(ctx, url, cfg.Name, cfg.Password)
	}
	s.dialTCP = func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", url)
		if err != nil || !cfg.TLS {
			return nc, err
		}
		host, _, _ := net.SplitHostPort(url)
		tc := tls.Client(nc, cfg.tlsConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
	return s, nil
}

// Run creates the base directory if needed, attaches to the master and
// serves it, reconnecting after every lost connection, until ctx ends (it
// returns ctx's error), the master sends shutdown (it returns nil) or the
// master refused the credentials Config.MaxRefusals times in a row (it
// returns ErrRefused). Running commands are killed when the connection
// they belong to ends.
func (s *Slave) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.Basedir, 0o777); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	log := s.cfg.Logger.With("master", s.url, "slave", s.cfg.Name)
	b := newBackoff(s.cfg.MinBackoff, s.cfg.MaxBackoff)
	refusals := 0
	for {
		var shutdown, attached bool
		var err error
		if s.cfg.Protocol == PB {
			shutdown, attached, err = s.servePB(ctx, log)
		} else {
			shutdown, attached, err = s.serveMsgpack(ctx, log)
		}
		if shutdown {
			return nil
		}
		if attached {
			b.reset()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var he *wire.HandshakeError
		if errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized || errors.Is(err, pb.ErrUnauthorized) {
			refusals++
			log.Error("master refused the slave's name or password", "refusals", refusals)
			if s.cfg.MaxRefusals > 0 && refusals >= s.cfg.MaxRefusals {
				return fmt.Errorf("%w (%d times)", ErrRefused, refusals)
			}
		} else {
			refusals = 0
			log.Warn("connection to master ended", "err", err)
		}
		wait := b.wait()
		log.Info("reconnecting later", "in", wait.Round(time.Millisecond))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// serveMsgpack makes one msgpack connection and serves it until it ends;
// it says whether the master asked for a shutdown and whether it had
// attached the slave.
func (s *Slave) serveMsgpack(ctx context.Context, log *slog.Logger) (shutdown, attached bool, err error) {
	t, err := s.dial(ctx)
	if err != nil {
		return false, false, fmt.Errorf("cannot connect: %w", err)
	}
	sess := newSession(s.cfg.Basedir, log)
	conn := wire.NewConn(t, sess.handle)
	sess.conn = conn
	log.Info("connected to master")
	served := make(chan error, 1)
	go func() { served <- conn.Serve() }()
	return sess.wait(ctx, conn, served)
}

// wait waits for a served connection to end: by itself, with ctx, or
// after the master's shutdown request; then for the session's commands.
func (sess *session) wait(ctx context.Context, conn io.Closer, served <-chan error) (shutdown, attached bool, err error) {
	select {
	case err = <-served:
	case <-ctx.Done():
		conn.Close()
		err = <-served
	case <-sess.shutdown:
		shutdown = true
		sess.interruptAll("slave shutting down")
		timer := time.NewTimer(shutdownGrace)
		select {
		case err = <-served:
		case <-timer.C:
			conn.Close()
			err = <-served
		}
		timer.Stop()
	}
	sess.wg.Wait()
	select {
	case <-sess.attached:
		attached = true
	default:
	}
	return shutdown, attached, err
}
