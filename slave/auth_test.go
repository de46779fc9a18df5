package slave_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

func TestRefusedLoginsLogOneLineAndNeverThePassword(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "bot1", "sekrit"), mustNew(t, "bot2", "other"))
	attached := slavetest.Attach(t, f.m, "bot2", "other", slave.Info{})

	for _, tc := range []struct {
		name, password, remote, reason string
		want                           error
	}{ // from two addresses: a second refusal from one address would be summarised (guesses_test.go)
		{"nobody", "guess-one", "127.0.0.9:4242", "unknown slave name", slave.ErrUnknownSlave},
		{"bot1", "guess-two", "127.0.0.10:4242", "wrong password", slave.ErrBadPassword},
	} {
		err := f.m.Authenticate(tc.name, tc.password, tc.remote)
		if !errors.Is(err, tc.want) {
			t.Fatalf("Authenticate(%q) = %v, want %v", tc.name, err, tc.want)
		}
		lines := f.log.Matching("refused", "remote="+tc.remote, "slave="+tc.name)
		if len(lines) != 1 || !strings.Contains(lines[0], tc.reason) {
			t.Errorf("want one log line for %q with reason %q, got %q", tc.name, tc.reason, lines)
		}
	}
	for _, line := range f.log.Lines() {
		for _, secret := range []string{"guess-one", "guess-two", "sekrit", "other"} {
			if strings.Contains(line, secret) {
				t.Errorf("log line shows a password: %s", line)
			}
		}
	}
	if !state(t, f.m, "bot2").Attached || attached.Closed() {
		t.Error("refused logins disturbed an attached slave")
	}
	if err := f.m.Authenticate("bot1", "sekrit", "127.0.0.9:1"); err != nil {
		t.Errorf("right password refused: %v", err)
	}
}

func TestAttachUnderUnknownNameIsRefused(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "bot1", "pw"))
	c := slavetest.NewConn(slave.Info{})
	if err := f.m.Attach(context.Background(), "ghost", c); !errors.Is(err, slave.ErrUnknownSlave) {
		t.Fatalf("Attach(ghost) = %v", err)
	}
}

func TestInfoIsStoredAndCopied(t *testing.T) {
	f := newFixture(t, slave.Config{}, mustNew(t, "bot1", "pw"))
	info := slave.Info{Admin: "Ann <ann@example.com>", Host: "a fast box", NumCPUs: 8, Commands: map[string]string{"shell": "3.7"}}
	c := slavetest.Attach(t, f.m, "bot1", "pw", info)
	st := state(t, f.m, "bot1")
	if st.Info.Admin != info.Admin || st.Info.Host != info.Host || st.Info.NumCPUs != 8 || st.RemoteAddr != c.RemoteAddr() {
		t.Errorf("state = %+v", st)
	}
	st.Info.Commands["shell"] = "changed"
	if state(t, f.m, "bot1").Info.Commands["shell"] != "3.7" {
		t.Error("state's Info shares its map with the manager")
	}
}
