package notify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
)

func newServer(t *testing.T, cfg *notifytest.Config) *notifytest.Server {
	t.Helper()
	s := notifytest.NewSMTPServer(cfg)
	t.Cleanup(s.Close)
	return s
}

// only returns the single message s received.
func only(t *testing.T, s *notifytest.Server) notifytest.Message {
	t.Helper()
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("server received %d messages, want 1", len(msgs))
	}
	return msgs[0]
}

var (
	lastConnected = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	detected      = time.Date(2026, 3, 1, 13, 5, 30, 0, time.UTC)
)

func TestSlaveMissingSendsMail(t *testing.T) {
	srv := newServer(t, nil)
	m := &notify.Mail{FromAddr: "Buildbot <buildbot@localhost>", RelayHost: srv.Addr}
	err := m.SlaveMissing(t.Context(), notify.Missing{
		Slave:         "bot-solaris",
		Recipients:    []string{"Jane Admin <jane@example.org>", "ops@example.org"},
		LastConnected: lastConnected,
		Detected:      detected,
		Admin:         "Jane Admin <jane@example.org>\n",
		Host:          "Solaris 11\n4 cores",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := only(t, srv)
	if got.From != "buildbot@localhost" {
		t.Errorf("envelope sender = %q", got.From)
	}
	if want := []string{"jane@example.org", "ops@example.org"}; !slices.Equal(got.To, want) {
		t.Errorf("envelope recipients = %q, want %q", got.To, want)
	}
	if want := `"Buildbot" <buildbot@localhost>`; got.Header.Get("From") != want {
		t.Errorf("From header = %q, want %q", got.Header.Get("From"), want)
	}
	if want := `"Jane Admin" <jane@example.org>, <ops@example.org>`; got.Header.Get("To") != want {
		t.Errorf("To header = %q, want %q", got.Header.Get("To"), want)
	}
	if want := "buildslave bot-solaris is missing: last connected 1h5m30s ago"; got.Subject != want {
		t.Errorf("subject = %q, want %q", got.Subject, want)
	}
	want := `The buildslave "bot-solaris" has gone missing.

Slave:          bot-solaris
Last connected: 2026-03-01 12:00:00 UTC (1h5m30s ago)
Detected:       2026-03-01 13:05:30 UTC
Admin:          Jane Admin <jane@example.org>
Host:           Solaris 11
                4 cores
`
	if got.Text != want {
		t.Errorf("body =\n%s\nwant\n%s", got.Text, want)
	}
	if got.TLS || got.Username != "" {
		t.Errorf("TLS = %t, Username = %q; want a plain, anonymous session", got.TLS, got.Username)
	}
}

func TestSlaveMissingNeverConnected(t *testing.T) {
	srv := newServer(t, nil)
	m := &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: srv.Addr}
	err := m.SlaveMissing(t.Context(), notify.Missing{
		Slave:      "bot-bsd",
		Recipients: []string{"ops@example.org"},
		Detected:   detected,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := only(t, srv)
	if want := "buildslave bot-bsd is missing: never connected"; got.Subject != want {
		t.Errorf("subject = %q, want %q", got.Subject, want)
	}
	want := `The buildslave "bot-bsd" has gone missing.

Slave:          bot-bsd
Last connected: never
Detected:       2026-03-01 13:05:30 UTC
Admin:          (not reported)
Host:           (not reported)
`
	if got.Text != want {
		t.Errorf("body =\n%s\nwant\n%s", got.Text, want)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestSlaveMissingWithoutRecipientsSendsNothing(t *testing.T) {
	m := &notify.Mail{RelayHost: closedAddr(t)}
	if err := m.SlaveMissing(t.Context(), notify.Missing{Slave: "bot-bsd"}); err != nil {
		t.Fatalf("SlaveMissing without recipients = %v, want nil and no dial", err)
	}
}

func TestSlaveMissingIgnoresBuildersFilter(t *testing.T) {
	srv := newServer(t, nil)
	m := &notify.Mail{FromAddr: "buildbot@localhost", Builders: []string{}, RelayHost: srv.Addr}
	if err := m.SlaveMissing(t.Context(), notify.Missing{Slave: "bot-bsd", Recipients: []string{"ops@example.org"}}); err != nil {
		t.Fatal(err)
	}
	only(t, srv)
}

func TestSlaveMissingRefusedConnection(t *testing.T) {
	addr := closedAddr(t)
	m := &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: addr}
	err := m.SlaveMissing(t.Context(), notify.Missing{Slave: "bot-bsd", Recipients: []string{"ops@example.org"}})
	if err == nil || !strings.HasPrefix(err.Error(), "notify: mail via "+addr+": ") {
		t.Fatalf("SlaveMissing to a closed port = %v, want an error naming the relay host", err)
	}
}

func TestSlaveMissingBadRecipient(t *testing.T) {
	m := &notify.Mail{RelayHost: closedAddr(t)}
	err := m.SlaveMissing(t.Context(), notify.Missing{Slave: "bot-bsd", Recipients: []string{"ops@example.org", "not an address"}})
	if want := `notify: recipient: "not an address" is not a valid address`; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

func TestStartTLS(t *testing.T) {
	missing := notify.Missing{Slave: "bot-bsd", Recipients: []string{"ops@example.org"}}
	tlsSrv := newServer(t, &notifytest.Config{StartTLS: true})
	plainSrv := newServer(t, nil)

	t.Run("trusted", func(t *testing.T) {
		m := &notify.Mail{RelayHost: tlsSrv.Addr, StartTLS: true, TLSConfig: tlsSrv.ClientTLSConfig()}
		if err := m.SlaveMissing(t.Context(), missing); err != nil {
			t.Fatal(err)
		}
		if got := tlsSrv.Messages(); len(got) != 1 || !got[0].TLS {
			t.Fatalf("messages = %+v, want one over TLS", got)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		m := &notify.Mail{RelayHost: tlsSrv.Addr, StartTLS: true}
		err := m.SlaveMissing(t.Context(), missing)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
	})
	t.Run("relay without STARTTLS", func(t *testing.T) {
		m := &notify.Mail{RelayHost: plainSrv.Addr, StartTLS: true}
		err := m.SlaveMissing(t.Context(), missing)
		want := "notify: mail via " + plainSrv.Addr + ": StartTLS is set but the relay host does not offer STARTTLS"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %s", err, want)
		}
		if n := len(plainSrv.Messages()); n != 0 {
			t.Fatalf("plain server received %d messages, want 0", n)
		}
	})
	t.Run("off", func(t *testing.T) {
		m := &notify.Mail{RelayHost: tlsSrv.Addr}
		if err := m.SlaveMissing(t.Context(), missing); err != nil {
			t.Fatal(err)
		}
		if got := tlsSrv.Messages(); len(got) != 2 || got[1].TLS {
			t.Fatalf("messages = %+v, want a second one in clear text", got)
		}
	})
}

func TestAuth(t *testing.T) {
	const user, password = "bot", "s3cret-pw"
	missing := notify.Missing{Slave: "bot-bsd", Recipients: []string{"ops@example.org"}}
	authSrv := newServer(t, &notifytest.Config{Username: user, Password: password})
	tlsAuthSrv := newServer(t, &notifytest.Config{StartTLS: true, Username: user, Password: password})
	host, _, _ := net.SplitHostPort(authSrv.Addr)

	for _, tc := range []struct {
		name string
		srv  *notifytest.Server
		m    notify.Mail
	}{
		{"username and password", authSrv, notify.Mail{Username: user, Password: password}},
		{"smtp.Auth", authSrv, notify.Mail{Auth: smtp.PlainAuth("", user, password, host)}},
		{"after STARTTLS", tlsAuthSrv, notify.Mail{Username: user, Password: password, StartTLS: true, TLSConfig: tlsAuthSrv.ClientTLSConfig()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.m.RelayHost = tc.srv.Addr
			before := len(tc.srv.Messages())
			if err := tc.m.SlaveMissing(t.Context(), missing); err != nil {
				t.Fatal(err)
			}
			got := tc.srv.Messages()
			if len(got) != before+1 || got[before].Username != user {
				t.Fatalf("messages = %+v, want one more from %q", got, user)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		m := &notify.Mail{RelayHost: authSrv.Addr, Username: user, Password: "wrong-pw"}
		err := m.SlaveMissing(t.Context(), missing)
		if err == nil || !strings.Contains(err.Error(), "535") {
			t.Fatalf("err = %v, want the relay's 535", err)
		}
		if strings.Contains(err.Error(), "wrong-pw") {
			t.Fatalf("error %q holds the password", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		m := &notify.Mail{RelayHost: authSrv.Addr}
		if err := m.SlaveMissing(t.Context(), missing); err == nil {
			t.Fatal("relay requiring AUTH accepted anonymous mail")
		}
	})
	t.Run("relay without AUTH", func(t *testing.T) {
		plain := newServer(t, nil)
		m := &notify.Mail{RelayHost: plain.Addr, Username: user, Password: password}
		err := m.SlaveMissing(t.Context(), missing)
		want := "notify: mail via " + plain.Addr + ": authentication is configured but the relay host does not offer AUTH"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %s", err, want)
		}
	})
}

func TestPasswordNeverPrinted(t *testing.T) {
	m := &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: "127.0.0.1:25", Username: "bot", Password: "s3cret-pw"}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "mail", m)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "mail", *m)
	for _, s := range []string{fmt.Sprint(m), fmt.Sprintf("%+v", m), fmt.Sprintf("%+v", *m), logged.String()} {
		if strings.Contains(s, "s3cret-pw") {
			t.Errorf("%q holds the password", s)
		}
		if !strings.Contains(s, `Username:\"bot\"`) && !strings.Contains(s, `Username:"bot"`) {
			t.Errorf("%q does not describe the Mail", s)
		}
	}
}

func TestBuildersFilter(t *testing.T) {
	srv := newServer(t, nil)
	for _, tc := range []struct {
		name     string
		builders []string
		want     map[string]bool
	}{
		{"nil means all", nil, map[string]bool{"full-linux": true, "quick": true}},
		{"empty means none", []string{}, map[string]bool{"full-linux": false, "quick": false}},
		{"list", []string{"full-linux"}, map[string]bool{"full-linux": true, "quick": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: srv.Addr, Builders: tc.builders}
			for builder, want := range tc.want {
				if got := m.WantsBuilder(builder); got != want {
					t.Errorf("WantsBuilder(%q) = %t, want %t", builder, got, want)
				}
				before := len(srv.Messages())
				sent, err := m.SendBuild(t.Context(), notify.BuildMail{
					Builder:    builder,
					Recipients: []string{"dev@example.org"},
					Subject:    "build " + builder + " failed",
					Body:       "see the log\n",
				})
				if err != nil || sent != want {
					t.Errorf("SendBuild(%q) = %t, %v; want %t, nil", builder, sent, err, want)
				}
				got := srv.Messages()[before:]
				if !want {
					if len(got) != 0 {
						t.Errorf("SendBuild(%q) delivered %d messages, want none", builder, len(got))
					}
					continue
				}
				if len(got) != 1 || got[0].Subject != "build "+builder+" failed" || got[0].Text != "see the log\n" ||
					!slices.Equal(got[0].To, []string{"dev@example.org"}) {
					t.Errorf("SendBuild(%q) delivered %+v", builder, got)
				}
			}
		})
	}
}

func TestSendBuildWithoutRecipients(t *testing.T) {
	m := &notify.Mail{RelayHost: closedAddr(t)}
	sent, err := m.SendBuild(t.Context(), notify.BuildMail{Builder: "quick", Subject: "x"})
	if sent || err != nil {
		t.Fatalf("SendBuild without recipients = %t, %v; want false, nil", sent, err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    notify.Mail
		want string // "" means valid
	}{
		{"zero value", notify.Mail{}, ""},
		{"full", notify.Mail{FromAddr: "Buildbot <buildbot@localhost>", RelayHost: "127.0.0.1:587", Username: "u", Password: "p",
			StartTLS: true, TLSConfig: nil, Builders: []string{"a"}, Timeout: time.Second}, ""},
		{"fromaddr", notify.Mail{FromAddr: "x"}, `notify: fromaddr: "x" is not a valid address`},
		{"relayhost without port", notify.Mail{RelayHost: "mail.example.org"},
			`notify: relayhost: "mail.example.org" is not host:port (e.g. "localhost:25"): address mail.example.org: missing port in address`},
		{"relayhost without host", notify.Mail{RelayHost: ":25"}, `notify: relayhost: ":25" is not host:port (e.g. "localhost:25"): empty host`},
		{"relayhost bad port", notify.Mail{RelayHost: "localhost:smtp"}, `notify: relayhost: "localhost:smtp" is not host:port (e.g. "localhost:25"): bad port "smtp"`},
		{"relayhost port 0", notify.Mail{RelayHost: "localhost:0"}, `notify: relayhost: "localhost:0" is not host:port (e.g. "localhost:25"): bad port "0"`},
		{"auth twice", notify.Mail{Auth: smtp.PlainAuth("", "u", "p", "localhost"), Username: "u"}, "notify: auth: set Auth or Username/Password, not both"},
		{"password without username", notify.Mail{Password: "p"}, "notify: username: empty, but a password is set"},
		{"tlsconfig without starttls", notify.Mail{TLSConfig: newServer(t, &notifytest.Config{StartTLS: true}).ClientTLSConfig()}, "notify: tlsconfig: set, but StartTLS is false"},
		{"empty builder", notify.Mail{Builders: []string{"a", ""}}, "notify: builders: empty name at index 1"},
		{"negative timeout", notify.Mail{Timeout: -time.Second}, "notify: timeout: -1s is negative"},
		{"several", notify.Mail{FromAddr: "x", Password: "p"},
			"notify: fromaddr: \"x\" is not a valid address\nnotify: username: empty, but a password is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v, want %s", err, tc.want)
			}
			// Sending validates before it dials.
			m := tc.m
			sendErr := m.SlaveMissing(t.Context(), notify.Missing{Slave: "s", Recipients: []string{"ops@example.org"}})
			if sendErr == nil || sendErr.Error() != tc.want {
				t.Fatalf("SlaveMissing() = %v, want %s", sendErr, tc.want)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	d := notify.Default()
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no hostname:", err)
	}
	if want := "buildslave@" + host; d.FromAddr != want && d.FromAddr != "buildslave@localhost" {
		t.Errorf("FromAddr = %q, want %q", d.FromAddr, want)
	}
	if d.RelayHost != "localhost:25" || d.Auth != nil || d.Username != "" || d.StartTLS {
		t.Errorf("Default() = %v, want plain localhost:25", d)
	}
	if d.Builders == nil || d.WantsBuilder("any") {
		t.Errorf("Default() wants build mail; it must send missing-slave mail only")
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
}

// silentRelay returns the address of a listener that accepts connections and
// never speaks, and a channel that yields once it has accepted one.
func silentRelay(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String(), accepted
}

func TestSendTimeout(t *testing.T) {
	addr, _ := silentRelay(t)
	m := &notify.Mail{RelayHost: addr, Timeout: 50 * time.Millisecond}
	err := m.SlaveMissing(t.Context(), notify.Missing{Slave: "s", Recipients: []string{"ops@example.org"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SlaveMissing to a silent relay = %v, want context.DeadlineExceeded", err)
	}
}

func TestSendCanceled(t *testing.T) {
	addr, accepted := silentRelay(t)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-accepted; cancel() }()
	m := &notify.Mail{RelayHost: addr}
	err := m.SlaveMissing(ctx, notify.Missing{Slave: "s", Recipients: []string{"ops@example.org"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("SlaveMissing canceled = %v, want context.Canceled", err)
	}
}
