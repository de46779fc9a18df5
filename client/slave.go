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
	"time"

	"github.com/buildslave/buildslave/internal/backoff"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/wire"
)

// ErrRefused is returned by Run when the master refused the slave's name
// and password Config.MaxRefusals times in a row.
var ErrRefused = errors.New("client: master refused the slave's credentials")

// shutdownGrace is how long the slave waits, after answering a shutdown
// request, for the answer to leave before it closes the connection.
const shutdownGrace = 200 * time.Millisecond

// Slave is a build slave: Run keeps it attached to one of its masters.
type Slave struct {
	cfg     Config
	masters []master
	// dial connects to a msgpack master's URL.
	dial func(ctx context.Context, url string) (wire.Transport, error)
	// dialTCP connects to a PB master's "host:port".
	dialTCP func(ctx context.Context, addr string) (net.Conn, error)
}

// New checks cfg and returns a slave ready to Run.
func New(cfg Config) (*Slave, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	masters, err := cfg.masters()
	if err != nil {
		return nil, err
	}
	d := &wire.Dialer{TLSConfig: cfg.tlsConfig("")} // used for wss:// only
	s := &Slave{cfg: cfg, masters: masters}
	s.dial = func(ctx context.Context, url string) (wire.Transport, error) {
		return d.Dial(ctx, url, cfg.Name, cfg.Password)
	}
	s.dialTCP = func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || !cfg.TLS {
			return nc, err
		}
		host, _, _ := net.SplitHostPort(addr)
		tc := tls.Client(nc, cfg.tlsConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
	return s, nil
}

// Run creates the base directory if needed, attaches to a master and
// serves it, reconnecting after every lost connection, until ctx ends (it
// returns ctx's error), the master sends shutdown (it returns nil) or the
// masters refused the credentials Config.MaxRefusals times in a row (it
// returns ErrRefused). Running commands are killed when the connection
// they belong to ends.
//
// It dials the masters in the order Config.Master names them, starting
// with the first: after a lost connection or a failed attempt it waits,
// then dials the next one (after the last, the first again). The wait
// doubles from Config.MinBackoff up to Config.MaxBackoff at each failed
// attempt, whichever master failed, drawn from its upper half so that
// slaves that lost the same master do not all dial in step; an attach
// starts it again from MinBackoff.
func (s *Slave) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.Basedir, 0o777); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	b := backoff.Counter{Policy: backoff.Policy{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff, Jitter: backoff.Half}}
	refusals := 0
	for i := 0; ; i = (i + 1) % len(s.masters) {
		m := s.masters[i]
		log := s.cfg.Logger.With("master", m.addr, "slave", s.cfg.Name)
		var shutdown, attached bool
		var err error
		if m.protocol == PB {
			shutdown, attached, err = s.servePB(ctx, m.addr, log)
		} else {
			shutdown, attached, err = s.serveMsgpack(ctx, m.addr, log)
		}
		if shutdown {
			return nil
		}
		if attached {
			b.Reset()
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
		wait := b.Next()
		log.Info("reconnecting later", "in", wait.Round(time.Millisecond), "to", s.masters[(i+1)%len(s.masters)].addr)
		if backoff.Wait(ctx, wait) != nil {
			return ctx.Err()
		}
	}
}

// serveMsgpack makes one msgpack connection to url and serves it until it ends;
// it says whether the master asked for a shutdown and whether it had
// attached the slave.
func (s *Slave) serveMsgpack(ctx context.Context, url string, log *slog.Logger) (shutdown, attached bool, err error) {
	t, err := s.dial(ctx, url)
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
