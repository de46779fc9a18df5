package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// Defaults for the zero values of Config's fields.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
)

// The protocols a slave speaks.
const (
	// PB is Perspective Broker: every Buildbot master's default protocol
	// (port 9989), and the only one of Buildbot 0.8.
	PB = "pb"
	// Msgpack is Buildbot's msgpack_experimental_v7 over WebSocket.
	Msgpack = "msgpack"
)

// DefaultKeepalive is how often a PB slave tells the master it is alive,
// as the stock slave does.
const DefaultKeepalive = 600 * time.Second

// Config is a slave's configuration. Master, Name, Password and Basedir are
// required; the zero value of every other field means its default.
type Config struct {
	// Master is the master's "host:port", or a ws:// or wss:// URL; or
	// several masters separated by commas ("a:9989,ws://b:9990/"), which
	// the slave tries in turn: after a lost connection or a failed dial
	// it dials the next one, with back-off (see [Slave.Run]). A comma
	// inside a URL is written %2C.
	Master string
	// Protocol is PB or Msgpack for every master; "" chooses for each:
	// Msgpack for a ws:// or wss:// URL and PB for "host:port", as a stock
	// master listens.
	Protocol string
	Name     string
	// Password is never logged: over msgpack it is sent once, in the
	// upgrade request; over PB only a challenge's response made with it.
	Password string
	// Basedir holds the slave's info/ directory and the builders'
	// directories the master creates.
	Basedir string

	// TLS makes a "host:port" Master use wss://. The master's certificate
	// is checked against RootCAs (nil: the system's roots).
	TLS     bool
	RootCAs *x509.CertPool

	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts: it doubles from MinBackoff up to MaxBackoff, with jitter,
	// and starts again from MinBackoff once the master has attached us.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxRefusals > 0 makes Run give up with ErrRefused after that many
	// consecutive refusals (HTTP 401: wrong name or password).
	MaxRefusals int

	// Keepalive is how often a PB slave sends the master a keepalive of
	// its own; DefaultKeepalive if 0, none if negative. (Over msgpack the
	// master sends them.)
	Keepalive time.Duration

	// Logger receives the slave's log; nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"Master", c.Master}, {"Name", c.Name}, {"Password", c.Password}, {"Basedir", c.Basedir},
	} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("client: Config.%s is empty", f.name))
		}
	}
	if strings.Contains(c.Name, ":") {
		errs = append(errs, errors.New("client: Config.Name must not contain ':'"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if c.Protocol != "" && c.Protocol != PB && c.Protocol != Msgpack {
		return c, fmt.Errorf("client: Config.Protocol %q: want %q or %q", c.Protocol, PB, Msgpack)
	}
	if c.Keepalive == 0 {
		c.Keepalive = DefaultKeepalive
	}
	abs, err := filepath.Abs(c.Basedir)
	if err != nil {
		return c, fmt.Errorf("client: Config.Basedir: %w", err)
	}
	c.Basedir = abs
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// master is one of the masters a slave dials.
type master struct {
	protocol string // PB or Msgpack
	addr     string // "host:port" for PB, the URL for msgpack
}

// masters returns the masters to dial, in the order Config.Master names
// them.
func (c Config) masters() ([]master, error) {
	var out []master
	var errs []error
	for i, m := range strings.Split(c.Master, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			errs = append(errs, fmt.Errorf("client: Config.Master %q: master %d is empty", c.Master, i+1))
			continue
		}
		t, err := c.master(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, t)
	}
	return out, errors.Join(errs...)
}

// master returns the protocol and the address to dial for one master m.
func (c Config) master(m string) (master, error) {
	url := strings.HasPrefix(m, "ws://") || strings.HasPrefix(m, "wss://")
	proto := c.Protocol
	if proto == "" {
		proto = PB
		if url {
			proto = Msgpack
		}
	}
	switch {
	case url && proto == PB:
		return master{}, fmt.Errorf("client: Config.Master %q: PB wants host:port", m)
	case url:
		return master{Msgpack, m}, nil
	}
	if _, _, err := net.SplitHostPort(m); err != nil {
		return master{}, fmt.Errorf("client: Config.Master %q: want host:port or a ws:// URL", m)
	}
	switch {
	case proto == PB:
		return master{PB, m}, nil
	case c.TLS:
		return master{Msgpack, "wss://" + m + "/"}, nil
	}
	return master{Msgpack, "ws://" + m + "/"}, nil
}

func (c Config) tlsConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: c.RootCAs, ServerName: serverName, MinVersion: tls.VersionTLS12}
}
