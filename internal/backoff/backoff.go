// Package backoff is the one capped exponential back-off of the module:
// the Go slave's reconnections, notify's retries, the latent lifecycle's
// quarantine and failed-stop retries, and the ec2 driver's SDK retries.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Jitter says how a wait is drawn from the doubled delay d.
type Jitter int

const (
	// None waits exactly d.
	None Jitter = iota
	// Half draws uniformly from the upper half, [d/2, d): retries stay
	// spread out without ever coming sooner than half the delay.
	Half
	// Full draws uniformly from [0, d).
	Full
)

// Policy is a capped exponential back-off: the wait before the n-th retry
// is Min·2^(n-1), at most Max, jittered as Jitter says. The zero Jitter is
// None; a Max below Min means Min (the wait never grows).
type Policy struct {
	Min, Max time.Duration
	Jitter   Jitter
	// Rand returns a number in [0, 1) for the jitter; nil means
	// math/rand/v2's Float64. Tests set it.
	Rand func() float64
}

// Delay returns the wait before the n-th retry (n ≥ 1; a smaller n counts
// as 1). It never overflows, however large n is.
func (p Policy) Delay(n int) time.Duration {
	limit := max(p.Max, p.Min)
	d := p.Min
	for i := 1; i < n && d < limit; i++ {
		if d > limit/2 {
			d = limit
			break
		}
		d *= 2
	}
	d = min(d, limit)
	if d <= 0 {
		return 0
	}
	r := p.Rand
	if r == nil {
		r = rand.Float64
	}
	switch p.Jitter {
	case Half:
		return d/2 + time.Duration(r()*float64(d/2))
	case Full:
		return time.Duration(r() * float64(d))
	}
	return d
}

// Counter walks a Policy: each Next is the wait before one more retry,
// and Reset starts again from the first. It is not safe for concurrent
// use.
type Counter struct {
	Policy
	n int
}

// Next returns the wait before the next retry.
func (c *Counter) Next() time.Duration {
	c.n++
	return c.Delay(c.n)
}

// Reset makes the next wait the first one again.
func (c *Counter) Reset() { c.n = 0 }

// Wait waits d, or until ctx ends; it returns nil after d, else ctx's
// cause. It is what every retry loop waits with: never a plain sleep,
// so that cancelling ctx ends the wait at once.
func Wait(ctx context.Context, d time.Duration) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
