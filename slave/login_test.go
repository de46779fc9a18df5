package slave_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

func TestOneConnectionPerNameMayBeAttaching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"), mustNew(t, "other", "pw"))
		first, firstEnded := context.WithCancel(t.Context())
		if err := f.m.Login(first, "bot", slave.Password("pw"), "192.0.2.1:1"); err != nil {
			t.Fatal(err)
		}
		// While the first attaches, a second under the same name is refused
		// with its reason; a wrong password is refused as such.
		err := f.m.Login(t.Context(), "bot", slave.Password("pw"), "192.0.2.2:1")
		if !errors.Is(err, slave.ErrAttaching) || !strings.Contains(err.Error(), "192.0.2.1:1") {
			t.Errorf("second login: %v", err)
		}
		lines := f.log.Matching("slave connection refused", "remote=192.0.2.2:1", "slave=bot", "still attaching")
		if len(lines) != 1 {
			t.Errorf("log: %q", f.log.Lines())
		}
		if err := f.m.Login(t.Context(), "bot", slave.Password("wrong"), "192.0.2.3:1"); !errors.Is(err, slave.ErrBadPassword) {
			t.Errorf("wrong password while another attaches: %v", err)
		}
		// Other names are not held.
		if err := f.m.Login(t.Context(), "other", slave.Password("pw"), "192.0.2.2:2"); err != nil {
			t.Errorf("another name: %v", err)
		}
		// The first connection dies mid-attach: the name is free at once.
		firstEnded()
		synctest.Wait()
		if err := f.m.Login(t.Context(), "bot", slave.Password("pw"), "192.0.2.2:3"); err != nil {
			t.Errorf("login after the first connection died: %v", err)
		}
	})
}

func TestLoginHoldEndsWithTheAttach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		attaching, attached := context.WithCancel(t.Context())
		if err := f.m.Login(attaching, "bot", slave.Password("pw"), "192.0.2.1:1"); err != nil {
			t.Fatal(err)
		}
		old := slavetest.NewConn(slave.Info{})
		if err := f.m.Attach(t.Context(), "bot", old); err != nil {
			t.Fatal(err)
		}
		attached()
		synctest.Wait()
		// An attached name is not held: a new connection logs in, and
		// Attach pings the old one, which answers.
		if err := f.m.Login(t.Context(), "bot", slave.Password("pw"), "192.0.2.2:1"); err != nil {
			t.Fatalf("login while attached: %v", err)
		}
		if err := f.m.Attach(t.Context(), "bot", slavetest.NewConn(slave.Info{})); !errors.Is(err, slave.ErrDuplicate) {
			t.Errorf("duplicate attach: %v", err)
		}
	})
}

func TestCloseEndsLoginHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "pw"))
		if err := f.m.Login(context.Background(), "bot", slave.Password("pw"), "192.0.2.1:1"); err != nil {
			t.Fatal(err)
		}
		f.m.Close() // returns although the login's context never ends
		if err := f.m.Login(context.Background(), "bot", slave.Password("pw"), "192.0.2.1:2"); !errors.Is(err, slave.ErrClosed) {
			t.Errorf("login after Close: %v", err)
		}
	})
}
