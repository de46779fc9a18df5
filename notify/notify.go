// Package notify tells people when a build slave has gone missing: the
// Notifier interface the slave manager calls, and a mail notifier that sends
// through an SMTP relay host.
package notify

import (
	"context"
	"time"
)

// Notifier is told when a slave has been missing for its missing_timeout.
// The slave manager calls it once per connection-loss event, from a
// goroutine of its own, so a slow Notifier never blocks the manager.
type Notifier interface {
	SlaveMissing(ctx context.Context, m Missing) error
}

// Missing describes one missing-slave event. Its Subject and Body methods
// give the text Mail sends, for other Notifiers to reuse.
type Missing struct {
	Slave         string    // the slave's name
	Recipients    []string  // the slave's notify_on_missing addresses
	LastConnected time.Time // when it was last connected; zero if it never attached
	Detected      time.Time // when missing_timeout expired; zero means now
	Admin         string    // the admin the slave reported when it last attached, if any
	Host          string    // the host description the slave reported, if any
}
