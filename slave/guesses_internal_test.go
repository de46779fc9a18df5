package slave

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
)

func TestRefusalTableIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &testlog.Buffer{}
		bot, _ := New("bot", "sekrit")
		m, err := NewManager(Config{Logger: slog.New(slog.NewTextHandler(logs, nil)), RefusalAddresses: 100}, bot)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		records := func() int {
			m.refusals.mu.Lock()
			defer m.refusals.mu.Unlock()
			if len(m.refusals.addrs) != m.refusals.lru.Len() {
				t.Fatalf("%d records, %d in the LRU list", len(m.refusals.addrs), m.refusals.lru.Len())
			}
			return len(m.refusals.addrs)
		}

		if m.Authenticate("bot", "sekrit", "192.0.2.1:1"); records() != 0 {
			t.Errorf("a right login left %d records", records())
		}
		for i := range 1000 {
			addr := fmt.Sprintf("10.0.%d.%d:1", i/256, i%256)
			m.Authenticate("bot", "wrong", addr)
			m.Authenticate("bot", "wrong", addr)
		}
		if n := records(); n != 100 {
			t.Errorf("%d records after refusals from 1000 addresses, want the cap of 100", n)
		}
		// The forgotten addresses' refusals are still reported.
		if n := len(logs.Matching("1 refusals from 10.0.")); n != 900 {
			t.Errorf("%d summaries of forgotten addresses, want 900", n)
		}

		// Once quiet for a minute with full buckets, records are forgotten
		// as soon as room is made.
		time.Sleep(2 * time.Minute)
		m.Authenticate("bot", "wrong", "192.0.2.2:1")
		if n := records(); n != 1 {
			t.Errorf("%d records after two quiet minutes and one refusal, want 1", n)
		}
		for _, line := range logs.Lines() {
			if strings.Contains(line, "sekrit") {
				t.Errorf("password logged: %s", line)
			}
		}
	})
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:4242":             "192.0.2.7",
		"[::ffff:192.0.2.7]:1":       "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:1":   "2001:db8:1:2::/64",
		"[fe80::1%eth0]:1":           "fe80::/64",
		"pipe-a":                     "pipe-a",
		"192.0.2.7":                  "192.0.2.7",
		"[2001:db8::1]:65535":        "2001:db8::/64",
		"not an address:with a port": "not an address",
	} {
		if got := addrKey(in); got != want {
			t.Errorf("addrKey(%q) = %q, want %q", in, got, want)
		}
	}
}
