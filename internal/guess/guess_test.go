package guess

import (
	"fmt"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
)

// attempt makes an attempt from remoteAddr that is refused unless right,
// as the slave manager does, and returns Take's ticket.
func attempt(tab *Table, remoteAddr string, right bool) Ticket {
	key := Key(remoteAddr)
	t := tab.Take(key)
	switch {
	case !t.OK:
		tab.Note(key, false, false)
	case right && t.Reserved:
		tab.Refund(key)
	case !right:
		tab.Note(key, true, !t.Reserved)
	}
	return t
}

func TestTableIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &testlog.Buffer{}
		tab := New(Config{Addresses: 100}, slog.New(slog.NewTextHandler(logs, nil)))
		defer tab.Close()
		records := func() int {
			tab.mu.Lock()
			defer tab.mu.Unlock()
			if len(tab.addrs) != tab.lru.Len() {
				t.Fatalf("%d records, %d in the LRU list", len(tab.addrs), tab.lru.Len())
			}
			return len(tab.addrs)
		}

		if attempt(tab, "192.0.2.1:1", true); records() != 0 {
			t.Errorf("a right attempt left %d records", records())
		}
		for i := range 1000 {
			addr := fmt.Sprintf("10.0.%d.%d:1", i/256, i%256)
			attempt(tab, addr, false)
			attempt(tab, addr, false)
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
		attempt(tab, "192.0.2.2:1", false)
		if n := records(); n != 1 {
			t.Errorf("%d records after two quiet minutes and one refusal, want 1", n)
		}
	})
}

func TestRetryAfterIsTheBackoffLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := New(Config{Burst: 2, Interval: time.Second, Backoff: 4 * time.Second}, slog.New(slog.DiscardHandler))
		defer tab.Close()
		const addr = "192.0.2.9:1"
		for i := range 2 {
			if tk := attempt(tab, addr, false); !tk.OK {
				t.Fatalf("attempt %d refused unchecked within the burst", i)
			}
		}
		tk := attempt(tab, addr, false)
		if tk.OK || !tk.Blocks || tk.RetryAfter != time.Second {
			t.Fatalf("the attempt past the burst got %+v, want a 1 s block", tk)
		}
		time.Sleep(300 * time.Millisecond)
		if tk := attempt(tab, addr, true); tk.OK || tk.Blocks || tk.RetryAfter != 700*time.Millisecond {
			t.Errorf("an attempt during the block got %+v, want refused with 700ms left", tk)
		}
		time.Sleep(700 * time.Millisecond)
		attempt(tab, addr, false) // the one attempt earned back during the block
		if tk := attempt(tab, addr, false); tk.OK || tk.RetryAfter != 2*time.Second {
			t.Errorf("running out again got %+v, want a 2 s block", tk)
		}
	})
}

func TestKey(t *testing.T) {
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
		if got := Key(in); got != want {
			t.Errorf("Key(%q) = %q, want %q", in, got, want)
		}
	}
}
