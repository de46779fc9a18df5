package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/smtp"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/jordan-wright/email"
)

// Defaults used for zero fields of Mail.
const (
	// DefaultRelayHost is the relay host of a Mail without RelayHost.
	DefaultRelayHost = "localhost:25"
	// DefaultTimeout bounds one send of a Mail without Timeout.
	DefaultTimeout = time.Minute
)

// Mail is a Notifier that sends missing-slave mail through an SMTP relay
// host, like Buildbot's MailNotifier; it can also send build-result mail
// subject to its builders filter.
//
// Zero fields mean defaults, so &Mail{} sends from "buildslave@<hostname>"
// through localhost:25 and wants build mail for every builder. The recipe
// of Buildbot 0.8.6's manual for missing-slave mail only is
//
//	&notify.Mail{FromAddr: "buildbot@localhost", Builders: []string{}, RelayHost: "mail.example.org:25"}
//
// A Mail must not be modified while it is sending.
type Mail struct {
	// FromAddr is the From address (fromaddr); "" means
	// "buildslave@<hostname>".
	FromAddr string
	// RelayHost is the SMTP server (relayhost, aka smarthost) as
	// "host:port"; "" means DefaultRelayHost.
	RelayHost string

	// Auth, if set, authenticates to the relay host with any net/smtp
	// mechanism. Set Auth or Username, not both.
	Auth smtp.Auth
	// Username and Password, if Username is set, authenticate with AUTH
	// PLAIN. net/smtp sends them only over TLS or to a loopback relay.
	// The password is never logged or printed.
	Username, Password string

	// StartTLS makes every send upgrade the connection with STARTTLS, and
	// fail if the relay host does not offer it. Without StartTLS mail goes
	// in clear text.
	StartTLS bool
	// TLSConfig configures STARTTLS; nil means the system roots and the
	// relay host's name. Its ServerName, if empty, is the relay host's.
	TLSConfig *tls.Config

	// Builders filters build-result mail (builders): nil means every
	// builder, an empty non-nil slice means none, otherwise only the
	// builders named. Missing-slave mail ignores it.
	Builders []string

	// Timeout bounds one send, from dial to QUIT; 0 means DefaultTimeout.
	Timeout time.Duration
}

var _ Notifier = (*Mail)(nil)

// Default returns the configuration used for missing-slave mail when the
// application configures no Mail, as Buildbot 0.8.6's manual promises
// for notify_on_missing: from
// "buildslave@<hostname>" through DefaultRelayHost, without authentication
// or TLS, and with no build mail (Builders is empty).
func Default() *Mail {
	return &Mail{FromAddr: defaultFromAddr(), RelayHost: DefaultRelayHost, Builders: []string{}}
}

// defaultFromAddr returns "buildslave@<hostname>", or
// "buildslave@localhost" if the hostname is unknown or unusable.
func defaultFromAddr() string {
	if h, err := os.Hostname(); err == nil {
		addr := "buildslave@" + h
		if _, err := mail.ParseAddress(addr); err == nil {
			return addr
		}
	}
	return "buildslave@localhost"
}

// Validate reports every problem with m's configuration, each error naming
// its field. Sending validates too, so a bad Mail fails before dialling.
func (m *Mail) Validate() error {
	var errs []error
	if m.FromAddr != "" {
		if _, err := mail.ParseAddress(m.FromAddr); err != nil {
			errs = append(errs, fmt.Errorf("notify: fromaddr: %q is not a valid address", m.FromAddr))
		}
	}
	if m.RelayHost != "" {
		if err := checkHostPort(m.RelayHost); err != nil {
			errs = append(errs, fmt.Errorf("notify: relayhost: %q is not host:port (e.g. %q): %w", m.RelayHost, DefaultRelayHost, err))
		}
	}
	if m.Auth != nil && m.Username != "" {
		errs = append(errs, errors.New("notify: auth: set Auth or Username/Password, not both"))
	}
	if m.Username == "" && m.Password != "" {
		errs = append(errs, errors.New("notify: username: empty, but a password is set"))
	}
	if m.TLSConfig != nil && !m.StartTLS {
		errs = append(errs, errors.New("notify: tlsconfig: set, but StartTLS is false"))
	}
	if i := slices.Index(m.Builders, ""); i >= 0 {
		errs = append(errs, fmt.Errorf("notify: builders: empty name at index %d", i))
	}
	if m.Timeout < 0 {
		errs = append(errs, fmt.Errorf("notify: timeout: %v is negative", m.Timeout))
	}
	return errors.Join(errs...)
}

func checkHostPort(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("empty host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// WantsBuilder reports whether m sends build-result mail for builder.
func (m *Mail) WantsBuilder(builder string) bool {
	return m.Builders == nil || slices.Contains(m.Builders, builder)
}

// SlaveMissing mails Missing.Subject and Missing.Body to mi.Recipients,
// whatever the builders filter says. No recipients means no mail and no
// error.
func (m *Mail) SlaveMissing(ctx context.Context, mi Missing) error {
	return m.send(ctx, mi.Recipients, mi.Subject(), mi.Body())
}

// BuildMail is one build-result mail; the application writes its text.
type BuildMail struct {
	Builder    string   // the builder whose build it reports
	Recipients []string // who gets it
	Subject    string
	Body       string // plain text
}

// SendBuild mails b if the builders filter wants b.Builder and b has
// recipients, and reports whether it sent it.
func (m *Mail) SendBuild(ctx context.Context, b BuildMail) (sent bool, err error) {
	if !m.WantsBuilder(b.Builder) || len(b.Recipients) == 0 {
		return false, nil
	}
	if err := m.send(ctx, b.Recipients, b.Subject, b.Body); err != nil {
		return false, err
	}
	return true, nil
}

// String describes m for humans and logs, without its password.
func (m Mail) String() string {
	builders := "all"
	if m.Builders != nil {
		builders = fmt.Sprintf("%q", m.Builders)
	}
	return fmt.Sprintf("notify.Mail{FromAddr:%q RelayHost:%q Username:%q Auth:%t StartTLS:%t Builders:%s}",
		m.fromAddr(), m.relayHost(), m.Username, m.Auth != nil, m.StartTLS, builders)
}

// LogValue makes slog log m's String, never its password.
func (m Mail) LogValue() slog.Value {
	return slog.StringValue(m.String())
}

func (m Mail) fromAddr() string {
	if m.FromAddr == "" {
		return defaultFromAddr()
	}
	return m.FromAddr
}

func (m Mail) relayHost() string {
	if m.RelayHost == "" {
		return DefaultRelayHost
	}
	return m.RelayHost
}

// send validates m and the recipients, composes the message with
// jordan-wright/email and speaks SMTP to the relay host itself, so that ctx
// and Timeout bound the whole conversation and StartTLS cannot silently fall
// back to clear text (email's own Send methods allow neither).
func (m *Mail) send(ctx context.Context, to []string, subject, body string) error {
	if len(to) == 0 {
		return nil
	}
	if err := m.Validate(); err != nil {
		return err
	}
	fromAddr := m.fromAddr()
	from, _ := mail.ParseAddress(fromAddr) // valid: checked by Validate or by defaultFromAddr
	rcpts := make([]string, len(to))
	for i, addr := range to {
		a, err := mail.ParseAddress(addr)
		if err != nil {
			return fmt.Errorf("notify: recipient: %q is not a valid address", addr)
		}
		rcpts[i] = a.Address
	}
	e := email.NewEmail()
	e.From, e.To, e.Subject, e.Text = fromAddr, to, subject, []byte(body)
	raw, err := e.Bytes()
	if err != nil {
		return fmt.Errorf("notify: compose: %w", err)
	}

	relay := m.relayHost()
	timeout := m.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := m.converse(ctx, relay, from.Address, rcpts, raw); err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return fmt.Errorf("notify: mail via %s: %w", relay, err)
	}
	return nil
}

// converse delivers raw to rcpts in one SMTP conversation with relay,
// aborting it when ctx is done.
func (m *Mail) converse(ctx context.Context, relay, from string, rcpts []string, raw []byte) error {
	host, _, _ := net.SplitHostPort(relay) // valid: checked by Validate
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", relay)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return err
	}
	if m.StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("StartTLS is set but the relay host does not offer STARTTLS")
		}
		cfg := m.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		if err := c.StartTLS(cfg); err != nil {
			return err
		}
	}
	if a := m.auth(host); a != nil {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("authentication is configured but the relay host does not offer AUTH")
		}
		if err := c.Auth(a); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(raw); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func (m *Mail) auth(host string) smtp.Auth {
	if m.Username != "" {
		return smtp.PlainAuth("", m.Username, m.Password, host)
	}
	return m.Auth
}
