package notify_test

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
)

// A missing-slave mail, sent to an in-process SMTP server on loopback.
func ExampleMail_SlaveMissing() {
	srv := notifytest.NewSMTPServer(nil)
	defer srv.Close()

	m := &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: srv.Addr}
	err := m.SlaveMissing(context.Background(), notify.Missing{
		Slave:         "bot-solaris",
		Recipients:    []string{"admin@example.org"},
		LastConnected: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Detected:      time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC),
		Admin:         "Jane Admin <admin@example.org>",
		Host:          "Solaris 11 on a T2000",
	})
	if err != nil {
		log.Fatal(err)
	}

	msg := srv.Messages()[0]
	fmt.Println("From:", msg.From)
	fmt.Println("To:", msg.To)
	fmt.Println("Subject:", msg.Subject)
	fmt.Print(msg.Text)
	// Output:
	// From: buildbot@localhost
	// To: [admin@example.org]
	// Subject: buildslave bot-solaris is missing: last connected 1h0m0s ago
	// The buildslave "bot-solaris" has gone missing.
	//
	// Slave:          bot-solaris
	// Last connected: 2026-03-01 12:00:00 UTC (1h0m0s ago)
	// Detected:       2026-03-01 13:00:00 UTC
	// Admin:          Jane Admin <admin@example.org>
	// Host:           Solaris 11 on a T2000
}

// The recipe of Buildbot 0.8.6's manual for a MailNotifier that sends missing-slave mail but no
// build mail:
//
//	m = mail.MailNotifier(fromaddr="buildbot@localhost", builders=[],
//	                      relayhost="smtp.example.org")
//	c['slaves'] = [BuildSlave('bot-solaris', 'solarispasswd',
//	                          notify_on_missing="bob@example.com")]
func Example_missingMailOnly() {
	relay := notifytest.NewSMTPServer(nil) // stands in for smtp.example.org:25
	defer relay.Close()

	m := &notify.Mail{FromAddr: "buildbot@localhost", Builders: []string{}, RelayHost: relay.Addr}
	ctx := context.Background()

	fmt.Println("build mail for full-linux:", m.WantsBuilder("full-linux"))
	sent, err := m.SendBuild(ctx, notify.BuildMail{
		Builder:    "full-linux",
		Recipients: []string{"dev@example.org"},
		Subject:    "build failed",
	})
	fmt.Println("build mail sent:", sent, err)

	err = m.SlaveMissing(ctx, notify.Missing{Slave: "bot-solaris", Recipients: []string{"bob@example.com"}})
	fmt.Println("missing-slave mail sent:", err == nil, relay.Messages()[0].To)
	// Output:
	// build mail for full-linux: false
	// build mail sent: false <nil>
	// missing-slave mail sent: true [bob@example.com]
}

// An application that configures no Mail still sends missing-slave mail:
// Default sends it through localhost:25, from buildslave@<hostname>, and
// sends no build mail.
func ExampleDefault() {
	m := notify.Default()
	fmt.Println(m.RelayHost, m.WantsBuilder("full-linux"))
	// Output: localhost:25 false
}

// The slave manager delivers each missing-slave notice in a goroutine it owns
// and waits for; Retrying retries and logs, so the result needs no handling.
func ExampleRetrying() {
	relay := notifytest.NewSMTPServer(nil)
	defer relay.Close()

	r := &notify.Retrying{
		Notifier: &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: relay.Addr},
		Retries:  3,           // after the first try
		Backoff:  time.Second, // then 2s, then 4s
	}

	var wg sync.WaitGroup
	wg.Go(func() {
		_ = r.SlaveMissing(context.Background(), notify.Missing{
			Slave:      "bot-bsd",
			Recipients: []string{"ops@example.org"},
		})
	})
	wg.Wait()

	fmt.Println(relay.Messages()[0].Subject)
	// Output:
	// buildslave bot-bsd is missing: never connected
}
