package slave_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/slave"
)

func TestDefaultsAreTheSeeds(t *testing.T) {
	s := mustNew(t, "bot-linux", "linuxpassword")
	if got := s.KeepaliveInterval(); got != time.Hour {
		t.Errorf("keepalive_interval = %v, want 1h", got)
	}
	if got := s.MissingTimeout(); got != 3600*time.Second {
		t.Errorf("missing_timeout = %v, want 3600s", got)
	}
	if got := s.MaxBuilds(); got != 0 {
		t.Errorf("max_builds = %d, want 0 (no limit)", got)
	}
	if got := s.NotifyOnMissing(); len(got) != 0 {
		t.Errorf("notify_on_missing = %v, want none", got)
	}
	if got := s.Properties(); len(got) != 1 || got["slavename"] != "bot-linux" {
		t.Errorf("properties = %v, want only slavename", got)
	}
	if s.Name() != "bot-linux" {
		t.Errorf("name = %q", s.Name())
	}
}

func TestOptionsAreApplied(t *testing.T) {
	props := map[string]any{"os": "solaris"}
	s := mustNew(t, "bot-solaris", "solarispasswd",
		slave.Properties(props),
		slave.MaxBuilds(2),
		slave.KeepaliveInterval(10*time.Minute),
		slave.NotifyOnMissing("bob@example.com", "alice@example.org"),
		slave.MissingTimeout(300*time.Second),
	)
	if s.MaxBuilds() != 2 || s.KeepaliveInterval() != 10*time.Minute || s.MissingTimeout() != 300*time.Second {
		t.Errorf("got max_builds %d keepalive %v missing %v", s.MaxBuilds(), s.KeepaliveInterval(), s.MissingTimeout())
	}
	if got := s.NotifyOnMissing(); strings.Join(got, ",") != "bob@example.com,alice@example.org" {
		t.Errorf("notify_on_missing = %v", got)
	}
	p := s.Properties()
	if p["os"] != "solaris" || p["slavename"] != "bot-solaris" {
		t.Errorf("properties = %v", p)
	}
	// Copies both ways: the caller's map and the returned one are not the slave's.
	props["os"] = "changed"
	p["os"] = "changed too"
	if got := s.Properties()["os"]; got != "solaris" {
		t.Errorf("properties changed through a copy: os = %v", got)
	}
	s.NotifyOnMissing()[0] = "mallory@example.com"
	if got := s.NotifyOnMissing()[0]; got != "bob@example.com" {
		t.Errorf("notify_on_missing changed through a copy: %v", got)
	}
}

func TestKeepaliveCanBeDisabled(t *testing.T) {
	s := mustNew(t, "bot", "pw", slave.KeepaliveInterval(slave.Disabled))
	if s.KeepaliveInterval() != slave.Disabled {
		t.Errorf("keepalive_interval = %v, want Disabled", s.KeepaliveInterval())
	}
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		what, name, password string
		opts                 []slave.Option
		field                string
	}{
		{"empty name", "", "pw", nil, "name"},
		{"colon in name", "bot:1", "pw", nil, "name"},
		{"control character in name", "bot\n1", "pw", nil, "name"},
		{"empty password", "bot", "", nil, "password"},
		{"negative max_builds", "bot", "pw", []slave.Option{slave.MaxBuilds(-1)}, "max_builds"},
		{"zero keepalive", "bot", "pw", []slave.Option{slave.KeepaliveInterval(0)}, "keepalive_interval"},
		{"zero missing_timeout", "bot", "pw", []slave.Option{slave.MissingTimeout(0)}, "missing_timeout"},
		{"malformed address", "bot", "pw", []slave.Option{slave.NotifyOnMissing("not an address")}, "notify_on_missing"},
		{"address with a display name", "bot", "pw", []slave.Option{slave.NotifyOnMissing("Bob <bob@example.com>")}, "notify_on_missing"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			s, err := slave.New(tc.name, tc.password, tc.opts...)
			if err == nil {
				t.Fatalf("New accepted %s: %v", tc.what, s)
			}
			var ce *slave.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("error %q does not name field %q", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("message %q does not name field %q", err, tc.field)
			}
		})
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	_, err := slave.New("", "", slave.MaxBuilds(-3))
	for _, field := range []string{"name:", "password:", "max_builds:"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v lacks %s", err, field)
		}
	}
}

func TestDuplicateNamesInOneManagerAreRefused(t *testing.T) {
	a, b := mustNew(t, "bot", "one"), mustNew(t, "bot", "two")
	_, err := slave.NewManager(slave.Config{}, a, b)
	var ce *slave.ConfigError
	if !errors.As(err, &ce) || ce.Field != "name" || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("NewManager with duplicate names: %v", err)
	}
}

func TestStringNeverShowsThePassword(t *testing.T) {
	s := mustNew(t, "bot", "hunter2")
	if strings.Contains(s.String(), "hunter2") {
		t.Errorf("String() = %q shows the password", s.String())
	}
}
