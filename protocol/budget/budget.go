// Package budget bounds the memory that the messages of all the
// connections of a server take at once while they are read, decoded and
// handled, so that many peers sending their costliest messages together
// cannot multiply what one of them may cost.
//
// Each message holds a Reservation of a Budget shared by the server's
// connections: it reserves what it may take before taking it, in at most
// a few steps, and gives it back once handled. A message that finds the
// budget spent waits for it, up to the Budget's wait, rather than being
// refused: a legitimate large message (a file upload's block) goes through
// once the others are done, while a hostile one cannot make the decoder
// allocate beside them.
package budget

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Defaults for the zero arguments of New.
const (
	// DefaultSize is the memory the messages of one server's connections
	// may take at once. The worst PB message fits (8 MiB for a 1 MiB
	// message), and so does a 2 MiB msgpack frame decoded within 7 times
	// its size, beside many ordinary messages (a 256 KiB file block
	// reserves 2.3 MiB); the heap, garbage included, then stays within
	// about twice the budget above idle however many peers send their
	// worst at once: 20 slaves' worst msgpack frames together take less
	// than 80 MB (it was 83-131 MB with 32 MiB).
	DefaultSize = 16 << 20
	// DefaultWait bounds how long a message waits for its share of the
	// budget before its connection is dropped. Messages are decoded in
	// milliseconds; a budget spent for a minute is held by peers that
	// stall in the middle of their messages.
	DefaultWait = time.Minute
)

// ErrExhausted is matched by the error of a Reservation that could not
// get its bytes: more than the whole budget, or not within the wait.
var ErrExhausted = errors.New("memory budget exhausted")

// Budget is memory shared by connections for their messages. It is safe
// for concurrent use. A nil *Budget bounds nothing: its Reservations
// reserve nothing and never wait.
type Budget struct {
	size int64
	wait time.Duration
	sem  *semaphore.Weighted
	used atomic.Int64
}

// New returns a Budget of size bytes whose Reservations wait up to wait
// for their bytes; zero or negative arguments mean DefaultSize and
// DefaultWait.
func New(size int64, wait time.Duration) *Budget {
	if size <= 0 {
		size = DefaultSize
	}
	if wait <= 0 {
		wait = DefaultWait
	}
	return &Budget{size: size, wait: wait, sem: semaphore.NewWeighted(size)}
}

// Size is the budget's bytes; 0 for a nil Budget.
func (b *Budget) Size() int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// InUse is the bytes reserved now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Reserve returns an empty Reservation of b for one connection's
// messages; waiting for bytes ends early when ctx ends (with its cause).
func (b *Budget) Reserve(ctx context.Context) Reservation {
	return Reservation{b: b, ctx: ctx}
}

// Reservation is the part of a Budget that one message holds. A
// connection keeps one and reuses it message after message; it is not
// safe for concurrent use.
type Reservation struct {
	b    *Budget
	ctx  context.Context
	held int64
}

// Budget is the Budget the reservation is of; nil if none.
func (r *Reservation) Budget() *Budget { return r.b }

// Held is the bytes the reservation holds.
func (r *Reservation) Held() int64 { return r.held }

// Acquire makes the reservation hold n bytes. It first gives back what it
// holds, then waits for the n bytes: a message never waits while holding
// part of the budget, so two messages each holding half of it and
// waiting for more cannot wait for ever. Waiters are served in the order
// they came. The error matches ErrExhausted when n is more than the whole
// budget (at once) or the bytes did not come within the Budget's wait;
// it is the cause of the Reservation's context if that ends first. On
// error the reservation holds nothing.
func (r *Reservation) Acquire(n int64) error {
	if r.b == nil {
		return nil
	}
	r.Release()
	if n > r.b.size {
		return fmt.Errorf("%w: %d bytes wanted, the whole budget is %d", ErrExhausted, n, r.b.size)
	}
	if !r.b.sem.TryAcquire(n) {
		ctx, cancel := context.WithTimeoutCause(r.ctx, r.b.wait,
			fmt.Errorf("%w: no %d bytes free in the %d-byte budget within %v", ErrExhausted, n, r.b.size, r.b.wait))
		defer cancel()
		if err := r.b.sem.Acquire(ctx, n); err != nil {
			return context.Cause(ctx)
		}
	}
	r.held = n
	r.b.used.Add(n)
	return nil
}

// Shrink gives back what the reservation holds beyond n bytes.
func (r *Reservation) Shrink(n int64) {
	if r.b == nil || r.held <= n {
		return
	}
	n = max(n, 0)
	r.b.sem.Release(r.held - n)
	r.b.used.Add(n - r.held)
	r.held = n
}

// Release gives back all the reservation holds.
func (r *Reservation) Release() { r.Shrink(0) }
