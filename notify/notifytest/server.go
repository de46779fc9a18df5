// Package notifytest provides an in-process SMTP server on loopback for testing mail notifiers.
package notifytest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jordan-wright/email"
)

// Config configures a Server. The zero value is a plain server that accepts
// every message without authentication.
type Config struct {
	// StartTLS makes the server offer STARTTLS with a self-signed
	// certificate for 127.0.0.1; Server.ClientTLSConfig trusts it.
	StartTLS bool
	// Username and Password, if Username is set, make the server offer
	// AUTH PLAIN and refuse mail from sessions that did not authenticate
	// with exactly these credentials.
	Username, Password string
	// Refuse makes the server refuse the first Refuse messages at MAIL
	// FROM with a temporary 451 error; a negative Refuse refuses all.
	Refuse int
}

// Message is one message the server accepted.
type Message struct {
	From     string      // envelope sender (MAIL FROM)
	To       []string    // envelope recipients (RCPT TO), in order
	Raw      []byte      // the message as received after DATA
	Header   mail.Header // the message's headers as received, not decoded
	Subject  string      // the decoded Subject header
	Text     string      // the decoded text/plain body, lines ending in "\n"
	Username string      // the user the session authenticated as; "" if none
	TLS      bool        // whether the message came over TLS
}

// Server is an SMTP server listening on 127.0.0.1. Close it when done.
type Server struct {
	// Addr is the server's "127.0.0.1:port" address, ready for Mail.RelayHost.
	Addr string

	cfg       Config
	clientTLS *tls.Config
	smtp      *smtp.Server
	listener  net.Listener
	served    chan struct{} // closed when Serve returns
	conns     sync.WaitGroup

	mu       sync.Mutex
	msgs     []Message
	refused  int
	received chan struct{} // closed and replaced on every accepted message
}

// NewSMTPServer starts a Server on 127.0.0.1 with an ephemeral port. A nil
// cfg means the zero Config. Like net/http/httptest.NewServer, it panics if
// it cannot listen.
func NewSMTPServer(cfg *Config) *Server {
	s := &Server{served: make(chan struct{}), received: make(chan struct{})}
	if cfg != nil {
		s.cfg = *cfg
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "127.0.0.1"
	srv.AllowInsecureAuth = true // loopback only
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if s.cfg.StartTLS {
		serverTLS, clientTLS, err := selfSigned()
		if err != nil {
			panic(fmt.Sprintf("notifytest: %v", err))
		}
		srv.TLSConfig, s.clientTLS = serverTLS, clientTLS
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("notifytest: listen: %v", err))
	}
	s.Addr = l.Addr().String()
	s.smtp, s.listener = srv, l
	go func() {
		defer close(s.served)
		srv.Serve(&trackingListener{Listener: l, conns: &s.conns})
	}()
	return s
}

// ClientTLSConfig returns a TLS config that trusts the server's self-signed
// certificate, for Mail.TLSConfig; it is nil unless Config.StartTLS is set.
func (s *Server) ClientTLSConfig() *tls.Config {
	return s.clientTLS.Clone()
}

// Messages returns the messages accepted so far, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Wait waits until the server has accepted at least n messages and returns
// them all, or returns ctx's error with the messages accepted so far.
func (s *Server) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		msgs, received := append([]Message(nil), s.msgs...), s.received
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs, nil
		}
		select {
		case <-received:
		case <-ctx.Done():
			return msgs, ctx.Err()
		}
	}
}

// Close stops the server, closes its connections and waits for them to end.
func (s *Server) Close() {
	s.smtp.Close()
	// go-smtp closes only the listeners its Serve has registered: if Serve
	// has not started yet, closing ours is what makes it return.
	s.listener.Close()
	<-s.served
	s.conns.Wait()
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{srv: s, conn: c}, nil
}

// refuse reports whether the next message is to be refused, counting it.
func (s *Server) refuse() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Refuse >= 0 && s.refused >= s.cfg.Refuse {
		return false
	}
	s.refused++
	return true
}

func (s *Server) accept(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.received)
	s.received = make(chan struct{})
}

var errRefused = &smtp.SMTPError{
	Code:         451,
	EnhancedCode: smtp.EnhancedCode{4, 3, 0},
	Message:      "notifytest: refusing mail as configured",
}

// session is one SMTP session; go-smtp starts a new one after STARTTLS.
type session struct {
	srv  *Server
	conn *smtp.Conn
	user string
	msg  Message
}

var _ smtp.AuthSession = (*session)(nil)

func (ss *session) AuthMechanisms() []string {
	if ss.srv.cfg.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.srv.cfg.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, username, password string) error {
		if username != ss.srv.cfg.Username || password != ss.srv.cfg.Password {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.cfg.Username != "" && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	if ss.srv.refuse() {
		return errRefused
	}
	ss.msg = Message{From: from, Username: ss.user}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.msg.To = append(ss.msg.To, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	header, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return unparsable(err)
	}
	parsed, err := email.NewEmailFromReader(bytes.NewReader(raw))
	if err != nil {
		return unparsable(err)
	}
	m := ss.msg
	m.Raw, m.Header, m.Subject, m.Text = raw, header.Header, parsed.Subject, strings.ReplaceAll(string(parsed.Text), "\r\n", "\n")
	_, m.TLS = ss.conn.TLSConnectionState()
	ss.srv.accept(m)
	ss.msg = Message{}
	return nil
}

func unparsable(err error) error {
	return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "notifytest: unparsable message: " + err.Error()}
}

func (ss *session) Reset() { ss.msg = Message{} }

func (ss *session) Logout() error { return nil }

// trackingListener counts accepted connections in conns until they close,
// so that Server.Close can wait for go-smtp's connection goroutines.
type trackingListener struct {
	net.Listener
	conns *sync.WaitGroup
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.conns.Add(1)
	return &trackedConn{Conn: c, done: l.conns.Done}, nil
}

type trackedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}

// selfSigned makes a throwaway certificate for 127.0.0.1 and returns a server
// config using it and a client config trusting it.
func selfSigned() (server, client *tls.Config, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "notifytest"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		// Valid for any clock, including a testing/synctest bubble's.
		NotBefore:             time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	client = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	return server, client, nil
}
