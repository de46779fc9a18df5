package notifytest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
)

// A test sends missing-slave mail through a real SMTP session to a server
// on loopback, then reads what arrived.
func ExampleNewSMTPServer() {
	relay := notifytest.NewSMTPServer(nil)
	defer relay.Close()

	m := &notify.Mail{FromAddr: "buildbot@example.org", RelayHost: relay.Addr}
	err := m.SlaveMissing(context.Background(), notify.Missing{
		Slave:         "bot-solaris",
		Recipients:    []string{"bob@example.com"},
		LastConnected: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC),
		Detected:      time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC), // missing_timeout: 1 h
	})
	if err != nil {
		log.Fatal(err)
	}
	msg := relay.Messages()[0]
	fmt.Println(msg.From, "->", msg.To)
	fmt.Println(msg.Subject)
	// Output:
	// buildbot@example.org -> [bob@example.com]
	// buildslave bot-solaris is missing: last connected 1h0m0s ago
}

// A relay that wants a login and STARTTLS, as a smarthost often does: the
// Mail must be configured for both, or the server refuses it.
func ExampleConfig() {
	relay := notifytest.NewSMTPServer(&notifytest.Config{
		StartTLS: true, Username: "buildbot", Password: "mailpassword"})
	defer relay.Close()

	m := &notify.Mail{
		FromAddr: "buildbot@example.org", RelayHost: relay.Addr,
		StartTLS: true, TLSConfig: relay.ClientTLSConfig(), // trusts the server's certificate
		Username: "buildbot", Password: "mailpassword",
	}
	err := m.SlaveMissing(context.Background(), notify.Missing{Slave: "bot-bsd", Recipients: []string{"ops@example.org"}})
	if err != nil {
		log.Fatal(err)
	}
	msg := relay.Messages()[0]
	fmt.Println("user:", msg.Username, "TLS:", msg.TLS)
	// Output: user: buildbot TLS: true
}

// A Recorder stands in for mail in tests that only check who would be
// told, and when.
func ExampleRecorder() {
	var r notifytest.Recorder
	var n notify.Notifier = &r // as slave.Config.Notifier
	_ = n.SlaveMissing(context.Background(), notify.Missing{Slave: "bot-linux", Recipients: []string{"admin@example.com"}})

	for _, m := range r.Missing() {
		fmt.Println(m.Slave, m.Recipients)
	}
	// Output: bot-linux [admin@example.com]
}
