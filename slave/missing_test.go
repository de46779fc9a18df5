package slave_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/keepalive"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

func TestSilentSlaveIsDroppedAtIntervalPlusBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{KeepaliveTimeout: 20 * time.Second},
			mustNew(t, "bot", "pw", slave.KeepaliveInterval(5*time.Minute)))
		c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		start := time.Now()
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if c.Keepalives() != 1 {
			t.Fatalf("%d keepalives after one interval", c.Keepalives())
		}
		if st := state(t, f.m, "bot"); st.LastSeen.Sub(start) != 5*time.Minute {
			t.Errorf("last seen %v after attach, want 5m", st.LastSeen.Sub(start))
		}
		c.Silent(true)
		time.Sleep(5*time.Minute + 20*time.Second - time.Nanosecond)
		synctest.Wait()
		if !state(t, f.m, "bot").Attached {
			t.Fatal("dropped before the reply bound")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		st := state(t, f.m, "bot")
		if st.Attached || !c.Closed() {
			t.Fatalf("silent slave still attached at interval+bound: %+v", st)
		}
		if len(f.log.Matching("keepalive", "slave=bot", "no reply")) == 0 {
			t.Errorf("no log line says why:\n%s", strings.Join(f.log.Lines(), "\n"))
		}
	})
}

func TestKeepaliveDisabledSendsNone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw", slave.KeepaliveInterval(slave.Disabled)))
		c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		time.Sleep(48 * time.Hour)
		synctest.Wait()
		if c.Keepalives() != 0 || !state(t, f.m, "bot").Attached {
			t.Errorf("keepalives %d with keepalive disabled", c.Keepalives())
		}
	})
}

func TestDefaultKeepaliveIsHourly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		time.Sleep(time.Hour - time.Nanosecond)
		synctest.Wait()
		if c.Keepalives() != 0 {
			t.Fatal("keepalive before an hour")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if c.Keepalives() != 1 {
			t.Fatalf("%d keepalives at one hour", c.Keepalives())
		}
		c.Silent(true)
		time.Sleep(time.Hour + keepalive.MaxDefaultTimeout)
		synctest.Wait()
		if state(t, f.m, "bot").Attached {
			t.Fatal("silent slave still attached after the default bound")
		}
	})
}

func TestMissingSlaveIsNotifiedOncePerLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot-solaris", "solarispasswd",
			slave.NotifyOnMissing("admin@example.com"), slave.MissingTimeout(300*time.Second)))
		c := slavetest.Attach(t, f.m, "bot-solaris", "solarispasswd", slave.Info{Admin: "Ann <ann@example.com>", Host: "sparc box"})
		time.Sleep(time.Hour)
		c.Drop(nil)
		synctest.Wait()
		lostAt := time.Now()
		time.Sleep(300*time.Second - time.Nanosecond)
		synctest.Wait()
		if n := len(f.sent.Missing()); n != 0 {
			t.Fatalf("%d notices before missing_timeout", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		got := f.sent.Missing()
		if len(got) != 1 {
			t.Fatalf("%d notices at missing_timeout, want 1", len(got))
		}
		m := got[0]
		if m.Slave != "bot-solaris" || !m.LastConnected.Equal(lostAt) || m.Detected.Sub(lostAt) != 300*time.Second ||
			m.Admin != "Ann <ann@example.com>" || m.Host != "sparc box" || strings.Join(m.Recipients, ",") != "admin@example.com" {
			t.Errorf("notice = %+v", m)
		}
		if !state(t, f.m, "bot-solaris").Missing {
			t.Error("state does not show missing")
		}
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if n := len(f.sent.Missing()); n != 1 {
			t.Fatalf("%d notices for one loss, want 1", n)
		}
		// A new loss event is a new notice.
		c = slavetest.Attach(t, f.m, "bot-solaris", "solarispasswd", slave.Info{})
		if state(t, f.m, "bot-solaris").Missing {
			t.Error("still missing after attach")
		}
		c.Drop(nil)
		time.Sleep(300 * time.Second)
		synctest.Wait()
		if n := len(f.sent.Missing()); n != 2 {
			t.Fatalf("%d notices after a second loss, want 2", n)
		}
	})
}

func TestReattachBeforeTimeoutSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw", slave.NotifyOnMissing("a@example.com")))
		c := slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		c.Drop(nil)
		time.Sleep(59 * time.Minute)
		slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		time.Sleep(48 * time.Hour)
		synctest.Wait()
		if n := len(f.sent.Missing()); n != 0 {
			t.Fatalf("%d notices for a slave back in time", n)
		}
	})
}

func TestNeverAttachedSlaveGoesMissingAfterStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw", slave.NotifyOnMissing("a@example.com", "b@example.com")),
			mustNew(t, "quiet", "pw")) // no notify_on_missing: missing, but no notice
		events, cancel := f.m.Subscribe()
		defer cancel()
		time.Sleep(time.Hour)
		synctest.Wait()
		got := f.sent.Missing()
		if len(got) != 1 || !got[0].LastConnected.IsZero() || len(got[0].Recipients) != 2 {
			t.Fatalf("notices = %+v, want one for bot, never connected", got)
		}
		missing := map[string]bool{}
		for range 2 {
			ev := <-events
			if ev.Kind == slave.Missing {
				missing[ev.Slave] = true
			}
		}
		if !missing["bot"] || !missing["quiet"] {
			t.Errorf("missing events for %v, want bot and quiet", missing)
		}
	})
}

func TestSlowNotifierNeverBlocksTheManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		blocked := notifierFunc(func(ctx context.Context) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
		f := newFixture(t, slave.Config{Notifier: blocked}, mustNew(t, "bot", "pw", slave.NotifyOnMissing("a@example.com")))
		time.Sleep(time.Hour)
		synctest.Wait() // the notifier is stuck
		start := time.Now()
		slavetest.Attach(t, f.m, "bot", "pw", slave.Info{})
		if _, err := f.m.TryAcquire("bot"); err != nil || time.Since(start) != 0 {
			t.Fatalf("manager blocked by its notifier: %v after %v", err, time.Since(start))
		}
		close(release)
	})
}

// aliveConn is a slave that sends keepalives of its own, as PB slaves do.
type aliveConn struct {
	*slavetest.Conn
	alive func()
}

func (c *aliveConn) OnAlive(f func()) { c.alive = f }

func TestSlavesOwnKeepalivesCountAsSeen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw", slave.KeepaliveInterval(slave.Disabled)))
		c := &aliveConn{Conn: slavetest.NewConn(slave.Info{})}
		if err := f.m.Attach(t.Context(), "bot", c); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		time.Sleep(10 * time.Minute)
		if c.alive == nil {
			t.Fatal("the manager did not ask for the slave's signs of life")
		}
		c.alive()
		if st := state(t, f.m, "bot"); st.LastSeen.Sub(start) != 10*time.Minute {
			t.Errorf("last seen %v after attach, want 10m", st.LastSeen.Sub(start))
		}
	})
}

// A notice that fails is sent again: NewManager wraps the Notifier in
// notify.Retrying.
func TestFailedNoticeIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var attempts atomic.Int32
		flaky := notifierFunc(func(context.Context) error {
			if attempts.Add(1) == 1 {
				return errors.New("relay down")
			}
			return nil
		})
		f := newFixture(t, slave.Config{Notifier: flaky}, mustNew(t, "bot", "pw", slave.NotifyOnMissing("a@example.com"), slave.MissingTimeout(time.Minute)))
		time.Sleep(time.Minute + time.Hour) // the missing timeout, then every back-off
		synctest.Wait()
		if n := attempts.Load(); n != 2 {
			t.Errorf("%d attempts, want the failed one and its retry", n)
		}
		f.m.Close()
	})
}
