package limit

import (
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
)

func TestHitLogsOncePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf testlog.Buffer
		l := New(slog.New(slog.NewTextHandler(&buf, nil)))
		for range 100 {
			l.Hit("master.http_max_body", "64 KiB", "request body too large", "remote", "127.0.0.1:1")
		}
		l.Hit("master.max_reason_length", 1024, "reason too long")
		if n := strings.Count(buf.String(), "\n"); n != 2 {
			t.Fatalf("%d lines for 101 hits of two limits, want 2:\n%s", n, buf.String())
		}
		if want := `msg="request body too large" remote=127.0.0.1:1 limit=master.http_max_body limit_value="64 KiB"`; !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, buf.String())
		}
		time.Sleep(Interval - time.Nanosecond)
		l.Hit("master.http_max_body", "64 KiB", "request body too large")
		time.Sleep(time.Nanosecond)
		l.Hit("master.http_max_body", "64 KiB", "request body too large")
		if !strings.Contains(buf.String(), "hits_not_logged=100") || strings.Count(buf.String(), "\n") != 3 {
			t.Errorf("after a minute, want one line counting 100 hits not logged:\n%s", buf.String())
		}
	})
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{1 << 30: "1 GiB", 64 << 10: "64 KiB", 3 << 40: "3 TiB", 1000: "1000 bytes", 1<<20 + 1: "1048577 bytes", 0: "0 bytes"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
