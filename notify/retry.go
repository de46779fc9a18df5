package notify

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/buildslave/buildslave/internal/backoff"
)

// Defaults used for zero fields of Retrying.
const (
	// DefaultRetries is how many times Retrying retries a failed attempt.
	DefaultRetries = 3
	// DefaultBackoff is Retrying's wait before its first retry.
	DefaultBackoff = time.Second
)

// maxBackoff caps the doubling wait between attempts.
const maxBackoff = time.Hour

// Retrying is a Notifier that never drops a notification silently: it
// retries a failed SlaveMissing with exponential back-off, logs each
// failure once, and logs a final line when it gives up. With the defaults it
// tries four times in all, waiting 1s, 2s and 4s between tries.
//
// The zero value delivers through Default(), the mail configuration
// Buildbot 0.8.6's manual promises when the application configures none. Like any Notifier it is
// meant to run in a goroutine the caller owns and waits for:
//
//	wg.Go(func() { _ = r.SlaveMissing(ctx, m) }) // Retrying has logged the outcome
type Retrying struct {
	// Notifier delivers each attempt; nil means Default().
	Notifier Notifier
	// Retries is how many times a failed attempt is retried; 0 means
	// DefaultRetries, negative means none.
	Retries int
	// Backoff is the wait before the first retry, doubled before each
	// next one up to an hour (a longer Backoff stays as it is); 0 or
	// negative means DefaultBackoff.
	Backoff time.Duration
	// Logger receives the failure and give-up lines; nil means
	// slog.Default(). Lines carry the slave's name, the attempt and the
	// error, never credentials (Mail's errors hold none).
	Logger *slog.Logger
}

var _ Notifier = (*Retrying)(nil)

// SlaveMissing delivers m, retrying as configured, and returns nil once an
// attempt succeeds. It returns the last attempt's error when it gives up,
// joined with ctx's error if ctx ended the waiting.
func (r *Retrying) SlaveMissing(ctx context.Context, m Missing) error {
	n, retries, first, log := r.Notifier, r.Retries, r.Backoff, r.Logger
	if n == nil {
		n = Default()
	}
	if retries == 0 {
		retries = DefaultRetries
	}
	if first <= 0 {
		first = DefaultBackoff
	}
	waits := backoff.Policy{Min: first, Max: maxBackoff}
	if log == nil {
		log = slog.Default()
	}
	for attempt := 1; ; attempt++ {
		err := n.SlaveMissing(ctx, m)
		if err == nil {
			if attempt > 1 {
				log.InfoContext(ctx, "notify: missing-slave notification sent", "slave", m.Slave, "attempt", attempt)
			}
			return nil
		}
		if attempt > retries {
			giveUp(ctx, log, m, attempt, err)
			return err
		}
		wait := waits.Delay(attempt)
		log.WarnContext(ctx, "notify: missing-slave notification failed; will retry",
			"slave", m.Slave, "attempt", attempt, "retry_in", wait, "error", err)
		if cause := backoff.Wait(ctx, wait); cause != nil {
			giveUp(ctx, log, m, attempt, cause)
			return errors.Join(err, cause)
		}
	}
}

// giveUp logs the final line; reason is what has not been logged yet: the
// last attempt's error, or why the waiting ended.
func giveUp(ctx context.Context, log *slog.Logger, m Missing, attempts int, reason error) {
	log.ErrorContext(ctx, "notify: missing-slave notification failed; giving up",
		"slave", m.Slave, "attempts", attempts, "error", reason)
}
