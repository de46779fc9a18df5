package slave_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// quietLogger keeps examples' output to what they print.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// Buildbot 0.8.6's first configuration: two slaves, each with a name and a
// password, given to a manager.
//
//	c['slaves'] = [BuildSlave('bot-solaris', 'solarispasswd'),
//	               BuildSlave('bot-bsd', 'bsdpasswd')]
func ExampleNew() {
	solaris, err := slave.New("bot-solaris", "solarispasswd")
	if err != nil {
		panic(err)
	}
	bsd, err := slave.New("bot-bsd", "bsdpasswd")
	if err != nil {
		panic(err)
	}
	m, err := slave.NewManager(slave.Config{Logger: quietLogger}, solaris, bsd)
	if err != nil {
		panic(err)
	}
	defer m.Close()
	for _, s := range m.Slaves() {
		fmt.Println(s.Name())
	}
	// Output:
	// bot-bsd
	// bot-solaris
}

// Invalid settings are refused when the slave is built, naming the field.
func ExampleNew_invalid() {
	_, err := slave.New("bot:1", "", slave.MaxBuilds(-1))
	fmt.Println(err)
	// Output:
	// slave "bot:1": name: must not contain ':' (it travels in HTTP Basic auth)
	// slave "bot:1": password: must not be empty
	// slave "bot:1": max_builds: must not be negative, got -1
}

// Properties are available to every build on the slave.
//
//	BuildSlave('bot-solaris', 'solarispasswd', properties={'os': 'solaris'})
func ExampleProperties() {
	s, _ := slave.New("bot-solaris", "solarispasswd", slave.Properties(map[string]any{"os": "solaris"}))
	p := s.Properties()
	fmt.Println(p["os"], p["slavename"])
	// Output: solaris bot-solaris
}

// max_builds limits how many builds a slave runs at once.
//
//	BuildSlave("bot-linux", "linuxpassword", max_builds=2)
func ExampleMaxBuilds() {
	s, _ := slave.New("bot-linux", "linuxpassword", slave.MaxBuilds(2))
	m, _ := slave.NewManager(slave.Config{Logger: quietLogger}, s)
	defer m.Close()

	// In a real master the protocol package attaches the slave; here an
	// in-memory connection stands in for it.
	conn := slavetest.NewConn(slave.Info{})
	if err := m.Attach(context.Background(), "bot-linux", conn); err != nil {
		panic(err)
	}
	first, _ := m.TryAcquire("bot-linux")
	second, _ := m.TryAcquire("bot-linux")
	_, err := m.TryAcquire("bot-linux")
	fmt.Println("third build:", err)
	first.Release()
	second.Release()
	st, _ := m.State("bot-linux")
	fmt.Println("running:", st.Running, "of", st.MaxBuilds)
	// Output:
	// third build: no free build slot
	// running: 0 of 2
}

// The keepalive interval is an hour unless set; Disabled is keepalive_interval=None.
//
//	BuildSlave('bot-linux', 'linuxpasswd', keepalive_interval=3600)
func ExampleKeepaliveInterval() {
	every, _ := slave.New("bot-linux", "linuxpasswd", slave.KeepaliveInterval(3600*time.Second))
	never, _ := slave.New("bot-quiet", "quietpasswd", slave.KeepaliveInterval(slave.Disabled))
	fmt.Println(every.KeepaliveInterval(), never.KeepaliveInterval() == slave.Disabled)
	// Output: 1h0m0s true
}

// notify_on_missing takes one address or several; missing_timeout says
// after how long a disconnected slave counts as missing.
//
//	BuildSlave('bot-solaris', 'solarispasswd',
//	           notify_on_missing=["bob@example.com", "alice@example.org"],
//	           missing_timeout=300) # notify after 5 minutes
func ExampleNotifyOnMissing() {
	one, _ := slave.New("bot-solaris", "solarispasswd", slave.NotifyOnMissing("bob@example.com"))
	two, _ := slave.New("bot-solaris", "solarispasswd",
		slave.NotifyOnMissing("bob@example.com", "alice@example.org"),
		slave.MissingTimeout(300*time.Second))
	fmt.Println(one.NotifyOnMissing(), one.MissingTimeout())
	fmt.Println(two.NotifyOnMissing(), two.MissingTimeout())
	// Output:
	// [bob@example.com] 1h0m0s
	// [bob@example.com alice@example.org] 5m0s
}

// Buildbot 0.8.6's recipe for missing-slave mail but no build mail: a mail
// notifier with builders=[], whose from address and relay host the
// missing-slave mail uses. Here the relay host is an SMTP server on
// loopback, and the slave is missing after 50 ms instead of 5 minutes.
//
//	m = mail.MailNotifier(fromaddr="buildbot@localhost", builders=[],
//	                      relayhost="smtp.example.org")
//	c['status'].append(m)
//	c['slaves'] = [BuildSlave('bot-solaris', 'solarispasswd',
//	                          notify_on_missing="bob@example.com")]
func ExampleConfig_missingMail() {
	relay := notifytest.NewSMTPServer(nil)
	defer relay.Close()
	mailer := &notify.Mail{FromAddr: "buildbot@localhost", Builders: []string{}, RelayHost: relay.Addr}

	s, _ := slave.New("bot-solaris", "solarispasswd",
		slave.NotifyOnMissing("bob@example.com"),
		slave.MissingTimeout(50*time.Millisecond))
	m, _ := slave.NewManager(slave.Config{Logger: quietLogger, Notifier: mailer}, s)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := relay.Wait(ctx, 1)
	if err != nil {
		panic(err)
	}
	m.Shutdown(ctx) // waits for the mail's SMTP session to end
	fmt.Println(msgs[0].From, "->", msgs[0].To)
	fmt.Println(msgs[0].Subject)
	// Output:
	// buildbot@localhost -> [bob@example.com]
	// buildslave bot-solaris is missing: never connected
}

// A build learns at once, through its context, that its slave was lost.
func ExampleBuild_Context() {
	s, _ := slave.New("bot-linux", "linuxpassword")
	m, _ := slave.NewManager(slave.Config{Logger: quietLogger}, s)
	defer m.Close()
	conn := slavetest.NewConn(slave.Info{})
	m.Attach(context.Background(), "bot-linux", conn)

	b, _ := m.Acquire(context.Background(), "bot-linux")
	defer b.Release()
	conn.Drop(errors.New("connection reset by peer"))
	<-b.Context().Done()
	fmt.Println(context.Cause(b.Context()))
	// Output: slave lost: bot-linux: connection reset by peer
}
