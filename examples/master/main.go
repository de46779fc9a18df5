// Command master is the main example: a small master built on the
// library. With no arguments it runs on an embedded default that needs
// nothing installed and no cloud account: it configures the seed's slaves,
// attaches in-memory slave connections, shows max_builds at work, loses a
// slave and mails its admin through an SMTP server on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

func main() {
	missing := flag.Duration("missing-timeout", 2*time.Second, "how long the lost slave may be gone before its admin is mailed")
	verbose := flag.Bool("v", false, "show the manager's log lines")
	flag.Parse()
	level := slog.LevelWarn + 1
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(log, *missing); err != nil {
		fmt.Fprintln(os.Stderr, "master:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(log *slog.Logger, missingTimeout time.Duration) error {
	relay := notifytest.NewSMTPServer(nil)
	defer relay.Close()
	step("SMTP relay for missing-slave mail listening on %s", relay.Addr)

	// The seed's configuration, in Go.
	linux, err := slave.New("bot-linux", "linuxpassword", slave.MaxBuilds(2))
	if err != nil {
		return err
	}
	solaris, err := slave.New("bot-solaris", "solarispasswd",
		slave.Properties(map[string]any{"os": "solaris"}),
		slave.NotifyOnMissing("bob@example.com"),
		slave.MissingTimeout(missingTimeout))
	if err != nil {
		return err
	}
	m, err := slave.NewManager(slave.Config{
		Logger:   log,
		Notifier: &notify.Mail{FromAddr: "buildbot@localhost", Builders: []string{}, RelayHost: relay.Addr},
	}, linux, solaris)
	if err != nil {
		return err
	}
	defer m.Close()
	step("configured %d slaves: bot-linux (max_builds=2), bot-solaris (notify_on_missing, missing_timeout=%v)", len(m.Slaves()), missingTimeout)

	if err := m.Authenticate("bot-linux", "wrong", "127.0.0.1:40000"); err != nil {
		step("a login with a wrong password is refused: %v", err)
	}

	// In-memory connections stand in for slaves dialing in over the network.
	linuxConn, err := attach(m, "bot-linux", "linuxpassword", slave.Info{Admin: "Ann <ann@example.com>", Host: "a linux box"})
	if err != nil {
		return err
	}
	defer linuxConn.Close()
	solarisConn, err := attach(m, "bot-solaris", "solarispasswd", slave.Info{Admin: "Bob <bob@example.com>", Host: "a sparc box"})
	if err != nil {
		return err
	}

	b1, _ := m.TryAcquire("bot-linux")
	b2, _ := m.TryAcquire("bot-linux")
	_, err = m.TryAcquire("bot-linux")
	step("bot-linux runs 2 builds; a third is refused by max_builds: %v", err)
	b1.Release()
	b2.Release()

	b3, err := m.TryAcquire("bot-solaris")
	if err != nil {
		return err
	}
	step("a build starts on bot-solaris with properties %v", b3.Properties())
	solarisConn.Drop(errors.New("connection reset by peer"))
	<-b3.Context().Done()
	step("bot-solaris is lost; its build learns at once: %v", context.Cause(b3.Context()))

	step("waiting %v for bot-solaris to count as missing...", missingTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), missingTimeout+30*time.Second)
	defer cancel()
	msgs, err := relay.Wait(ctx, 1)
	if err != nil {
		return fmt.Errorf("no missing-slave mail: %w", err)
	}
	step("mail from %s to %v: %q\n%s", msgs[0].From, msgs[0].To, msgs[0].Subject, msgs[0].Text)

	for _, st := range m.States() {
		step("%-12s attached=%-5v missing=%-5v running=%d admin=%q", st.Name, st.Attached, st.Missing, st.Running, st.Info.Admin)
	}
	return m.Shutdown(ctx)
}

func attach(m *slave.Manager, name, password string, info slave.Info) (*slavetest.Conn, error) {
	c := slavetest.NewConn(info)
	if err := m.Authenticate(name, password, c.RemoteAddr()); err != nil {
		return nil, err
	}
	if err := m.Attach(context.Background(), name, c); err != nil {
		return nil, err
	}
	step("%s attached from %s", name, c.RemoteAddr())
	return c, nil
}
