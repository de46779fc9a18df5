package client

import (
	"math/rand/v2"
	"time"
)

// backoff yields the waits between connection attempts: doubling from min
// up to max, each drawn uniformly from its upper half so that many slaves
// restarted together do not dial in step.
type backoff struct {
	min, max time.Duration
	next     time.Duration
	rand     func() float64 // in [0, 1)
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, next: min, rand: rand.Float64}
}

// wait returns the next wait and doubles the one after.
func (b *backoff) wait() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	return d/2 + time.Duration(b.rand()*float64(d/2))
}

// reset starts again from min.
func (b *backoff) reset() { b.next = b.min }
