package slavetest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

func newManager(t *testing.T) *slave.Manager {
	t.Helper()
	s, err := slave.New("bot", "pw", slave.KeepaliveInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	m, err := slave.NewManager(slave.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// A silent Conn is dropped by the manager after the keepalive interval
// plus the reply bound; in a synctest bubble the hour passes at once.
func TestSilentConnIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newManager(t)
		c := slavetest.Attach(t, m, "bot", "pw", slave.Info{Admin: "ann"})
		c.Silent(true)
		time.Sleep(time.Hour + time.Minute)
		synctest.Wait()
		if st, _ := m.State("bot"); st.Attached || !c.Closed() {
			t.Fatalf("silent conn still attached: %+v", st)
		}
	})
}

func TestAnsweringAgainAfterSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := slavetest.NewConn(slave.Info{})
		c.Silent(true)
		done := make(chan error)
		go func() { done <- c.Print(context.Background(), "hello") }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("silent conn answered")
		default:
		}
		c.Silent(false)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if p := c.Prints(); len(p) != 1 || p[0] != "hello" {
			t.Errorf("prints = %v", p)
		}
	})
}

func TestDropEndsTheContextWithTheCause(t *testing.T) {
	c := slavetest.NewConn(slave.Info{})
	boom := errors.New("boom")
	c.Drop(boom)
	if !errors.Is(context.Cause(c.Context()), boom) {
		t.Errorf("cause = %v", context.Cause(c.Context()))
	}
	if err := c.Keepalive(context.Background()); !errors.Is(err, boom) {
		t.Errorf("keepalive on a dropped conn = %v", err)
	}
	if slavetest.NewConn(slave.Info{}).RemoteAddr() == c.RemoteAddr() {
		t.Error("two conns share a remote address")
	}
}

func TestHeldCloseTakesEffectOnRelease(t *testing.T) {
	c := slavetest.NewConn(slave.Info{})
	c.HoldClose()
	c.Close()
	if c.Context().Err() != nil || !c.Closed() {
		t.Fatal("held close took effect early, or was not recorded")
	}
	c.ReleaseClose()
	if !errors.Is(context.Cause(c.Context()), slavetest.ErrClosed) {
		t.Errorf("cause after release = %v", context.Cause(c.Context()))
	}
}
