package notify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
)

// fakeNotifier fails its first failures calls (all if failures < 0) and
// records when each call came, as an offset from start.
type fakeNotifier struct {
	start    time.Time
	failures int

	mu    sync.Mutex
	calls []time.Duration
}

func (f *fakeNotifier) SlaveMissing(ctx context.Context, m notify.Missing) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Since(f.start))
	if f.failures >= 0 && len(f.calls) > f.failures {
		return nil
	}
	return fmt.Errorf("relay down (call %d)", len(f.calls))
}

// logTo returns a logger writing text lines without times to b.
func logTo(b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
}

var missingBSD = notify.Missing{Slave: "bot-bsd", Recipients: []string{"ops@example.org"}}

func TestRetryingThenSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeNotifier{start: time.Now(), failures: 2}
		var logged strings.Builder
		r := &notify.Retrying{Notifier: f, Logger: logTo(&logged)}
		if err := r.SlaveMissing(t.Context(), missingBSD); err != nil {
			t.Fatalf("SlaveMissing = %v, want nil", err)
		}
		if want := []time.Duration{0, time.Second, 3 * time.Second}; !slices.Equal(f.calls, want) {
			t.Errorf("calls at %v, want %v", f.calls, want)
		}
		if got := time.Since(f.start); got != 3*time.Second {
			t.Errorf("returned after %v, want 3s", got)
		}
		want := `level=WARN msg="notify: missing-slave notification failed; will retry" slave=bot-bsd attempt=1 retry_in=1s error="relay down (call 1)"
level=WARN msg="notify: missing-slave notification failed; will retry" slave=bot-bsd attempt=2 retry_in=2s error="relay down (call 2)"
level=INFO msg="notify: missing-slave notification sent" slave=bot-bsd attempt=3
`
		if logged.String() != want {
			t.Errorf("log =\n%s\nwant\n%s", logged.String(), want)
		}
	})
}

func TestRetryingGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeNotifier{start: time.Now(), failures: -1}
		var logged strings.Builder
		r := &notify.Retrying{Notifier: f, Logger: logTo(&logged)}
		err := r.SlaveMissing(t.Context(), missingBSD)
		if err == nil || err.Error() != "relay down (call 4)" {
			t.Fatalf("SlaveMissing = %v, want the last attempt's error", err)
		}
		if want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}; !slices.Equal(f.calls, want) {
			t.Errorf("calls at %v, want %v", f.calls, want)
		}
		if got := time.Since(f.start); got != 7*time.Second {
			t.Errorf("returned after %v, want 7s", got)
		}
		want := `level=WARN msg="notify: missing-slave notification failed; will retry" slave=bot-bsd attempt=1 retry_in=1s error="relay down (call 1)"
level=WARN msg="notify: missing-slave notification failed; will retry" slave=bot-bsd attempt=2 retry_in=2s error="relay down (call 2)"
level=WARN msg="notify: missing-slave notification failed; will retry" slave=bot-bsd attempt=3 retry_in=4s error="relay down (call 3)"
level=ERROR msg="notify: missing-slave notification failed; giving up" slave=bot-bsd attempts=4 error="relay down (call 4)"
`
		if logged.String() != want {
			t.Errorf("log =\n%s\nwant\n%s", logged.String(), want)
		}
	})
}

func TestRetryingConfigured(t *testing.T) {
	for _, tc := range []struct {
		name    string
		retries int
		backoff time.Duration
		want    []time.Duration
	}{
		{"no retries", -1, 0, []time.Duration{0}},
		{"one retry after 10s", 1, 10 * time.Second, []time.Duration{0, 10 * time.Second}},
		{"doubling stops at an hour", 4, 20 * time.Minute, []time.Duration{0, 20 * time.Minute, 60 * time.Minute, 120 * time.Minute, 180 * time.Minute}},
		{"negative backoff means 1s", 2, -time.Second, []time.Duration{0, time.Second, 3 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeNotifier{start: time.Now(), failures: -1}
				var logged strings.Builder
				r := &notify.Retrying{Notifier: f, Retries: tc.retries, Backoff: tc.backoff, Logger: logTo(&logged)}
				if err := r.SlaveMissing(t.Context(), missingBSD); err == nil {
					t.Fatal("SlaveMissing = nil, want the last error")
				}
				if !slices.Equal(f.calls, tc.want) {
					t.Errorf("calls at %v, want %v", f.calls, tc.want)
				}
				if n := strings.Count(logged.String(), "giving up"); n != 1 {
					t.Errorf("%d give-up lines, want 1:\n%s", n, logged.String())
				}
			})
		})
	}
}

func TestRetryingStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeNotifier{start: time.Now(), failures: -1}
		var logged strings.Builder
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		r := &notify.Retrying{Notifier: f, Logger: logTo(&logged)}
		err := r.SlaveMissing(ctx, missingBSD)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "relay down (call 2)") {
			t.Fatalf("SlaveMissing = %v, want the last error and the deadline", err)
		}
		if got := time.Since(f.start); got != 2*time.Second {
			t.Errorf("returned after %v, want 2s", got)
		}
		if want := []time.Duration{0, time.Second}; !slices.Equal(f.calls, want) {
			t.Errorf("calls at %v, want %v", f.calls, want)
		}
		want := `level=WARN msg="notify: missing-slave notification failed; will retry" slave=bot-bsd attempt=1 retry_in=1s error="relay down (call 1)"
level=WARN msg="notify: missing-slave notification failed; will retry" slave=bot-bsd attempt=2 retry_in=2s error="relay down (call 2)"
level=ERROR msg="notify: missing-slave notification failed; giving up" slave=bot-bsd attempts=2 error="context deadline exceeded"
`
		if logged.String() != want {
			t.Errorf("log =\n%s\nwant\n%s", logged.String(), want)
		}
	})
}

// TestRetryingMailOverSMTP retries real SMTP sends to a relay that refuses
// the first two messages. The server runs outside the synctest bubble; the
// bubble's clock only advances while Retrying waits.
func TestRetryingMailOverSMTP(t *testing.T) {
	srv := newServer(t, &notifytest.Config{Refuse: 2})
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var logged strings.Builder
		r := &notify.Retrying{
			Notifier: &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: srv.Addr},
			Logger:   logTo(&logged),
		}
		if err := r.SlaveMissing(t.Context(), missingBSD); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("delivered after %v, want 3s", got)
		}
		if n := strings.Count(logged.String(), " 451 "); n != 2 { // not the relay's port, which may hold 451
			t.Errorf("log has %d refusals, want 2:\n%s", n, logged.String())
		}
	})
	if got := only(t, srv); got.Subject != "buildslave bot-bsd is missing: never connected" {
		t.Errorf("subject = %q", got.Subject)
	}
}

func TestRetryingMailGivesUpOverSMTP(t *testing.T) {
	srv := newServer(t, &notifytest.Config{Refuse: -1, Username: "bot", Password: "s3cret-pw"})
	synctest.Test(t, func(t *testing.T) {
		var logged strings.Builder
		r := &notify.Retrying{
			Notifier: &notify.Mail{FromAddr: "buildbot@localhost", RelayHost: srv.Addr, Username: "bot", Password: "s3cret-pw"},
			Retries:  2,
			Logger:   logTo(&logged),
		}
		err := r.SlaveMissing(t.Context(), missingBSD)
		if err == nil || !strings.Contains(err.Error(), "451") {
			t.Fatalf("SlaveMissing = %v, want the relay's 451", err)
		}
		log := logged.String()
		if strings.Count(log, "will retry") != 2 || strings.Count(log, "giving up") != 1 {
			t.Errorf("log =\n%s\nwant two retries and one give-up", log)
		}
		if strings.Contains(log, "s3cret-pw") {
			t.Errorf("log holds the password:\n%s", log)
		}
	})
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server accepted %d messages, want 0", n)
	}
}
