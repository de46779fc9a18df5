package notifytest_test

import (
	"context"
	"errors"
	"net/smtp"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/notify/notifytest"
)

func send(addr, subject string) error {
	msg := "From: a@example.org\r\nTo: b@example.org\r\nSubject: " + subject + "\r\n\r\nhello\r\n"
	return smtp.SendMail(addr, nil, "a@example.org", []string{"b@example.org", "c@example.org"}, []byte(msg))
}

func TestServerRecordsMessages(t *testing.T) {
	s := notifytest.NewSMTPServer(nil)
	defer s.Close()
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Errorf("Addr = %q, want loopback", s.Addr)
	}
	if s.ClientTLSConfig() != nil {
		t.Error("ClientTLSConfig is set without StartTLS")
	}
	for _, subject := range []string{"one", "two"} {
		if err := send(s.Addr, subject); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := s.Wait(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Subject != "one" || msgs[1].Subject != "two" {
		t.Fatalf("messages = %+v", msgs)
	}
	m := msgs[0]
	if m.From != "a@example.org" || strings.Join(m.To, " ") != "b@example.org c@example.org" ||
		m.Text != "hello\n" || m.Header.Get("To") != "b@example.org" {
		t.Errorf("message = %+v", m)
	}
}

func TestServerWaitHonoursContext(t *testing.T) {
	s := notifytest.NewSMTPServer(nil)
	defer s.Close()
	if err := send(s.Addr, "one"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	msgs, err := s.Wait(ctx, 2)
	if !errors.Is(err, context.Canceled) || len(msgs) != 1 {
		t.Fatalf("Wait = %d messages, %v; want 1, context.Canceled", len(msgs), err)
	}
}

func TestServerRefusesFirstMessages(t *testing.T) {
	s := notifytest.NewSMTPServer(&notifytest.Config{Refuse: 1})
	defer s.Close()
	if err := send(s.Addr, "one"); err == nil || !strings.HasPrefix(err.Error(), "451") {
		t.Fatalf("first send = %v, want 451", err)
	}
	if err := send(s.Addr, "two"); err != nil {
		t.Fatalf("second send = %v", err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].Subject != "two" {
		t.Fatalf("messages = %+v, want only the second", msgs)
	}
}

func TestServerRequiresAuth(t *testing.T) {
	s := notifytest.NewSMTPServer(&notifytest.Config{Username: "bot", Password: "pw"})
	defer s.Close()
	if err := send(s.Addr, "anonymous"); err == nil {
		t.Fatal("anonymous send accepted")
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages accepted, want 0", n)
	}
}

// TestCloseRightAfterStart closes servers before their serving goroutine
// may have run: Close must not wait for it forever.
func TestCloseRightAfterStart(t *testing.T) {
	for range 200 {
		notifytest.NewSMTPServer(nil).Close()
	}
}
