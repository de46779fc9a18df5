package client

import (
	"time"

	"github.com/buildslave/buildslave/internal/backoff"
)

// reconnectBackoff yields the waits between connection attempts: doubling
// from min up to max, each drawn uniformly from its upper half so that
// many slaves restarted together do not dial in step.
type reconnectBackoff struct{ backoff.Counter }

func newBackoff(min, max time.Duration) *reconnectBackoff {
	return &reconnectBackoff{backoff.Counter{Policy: backoff.Policy{Min: min, Max: max, Jitter: backoff.Half}}}
}

// wait returns the next wait; each one doubles the one after.
func (b *reconnectBackoff) wait() time.Duration { return b.Next() }

// reset starts again from min, once the master has attached us.
func (b *reconnectBackoff) reset() { b.Reset() }
