package budget_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
)

// acquire runs r.Acquire(n) on a goroutine and returns its error channel.
func acquire(r *budget.Reservation, n int64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Acquire(n) }()
	return done
}

// ready reports whether a result is ready on ch.
func ready(ch <-chan error) bool { return len(ch) > 0 }

func TestAcquireWaitsForRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(10, time.Minute)
		r1, r2 := b.Reserve(t.Context()), b.Reserve(t.Context())
		if err := r1.Acquire(7); err != nil {
			t.Fatal(err)
		}
		done := acquire(&r2, 4)
		synctest.Wait()
		if ready(done) {
			t.Fatal("a reservation got 4 bytes of 10 while 7 were held")
		}
		r1.Shrink(6)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := b.InUse(); got != 10 {
			t.Errorf("InUse = %d, want 10", got)
		}
		r1.Release()
		r2.Release()
		if got := b.InUse(); got != 0 {
			t.Errorf("InUse = %d after releasing all, want 0", got)
		}
	})
}

// TestAcquireNeverWaitsHolding: two reservations each holding part of the
// budget and both asking for more do not wait for each other for ever.
func TestAcquireNeverWaitsHolding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(10, time.Minute)
		r1, r2 := b.Reserve(t.Context()), b.Reserve(t.Context())
		if err := r1.Acquire(6); err != nil {
			t.Fatal(err)
		}
		if err := r2.Acquire(4); err != nil {
			t.Fatal(err)
		}
		d1 := acquire(&r1, 8)
		synctest.Wait()
		d2 := acquire(&r2, 5)
		if err := <-d1; err != nil { // first come, first served
			t.Fatal(err)
		}
		synctest.Wait()
		if ready(d2) {
			t.Fatal("5 bytes granted while 8 of 10 are held")
		}
		r1.Release()
		if err := <-d2; err != nil {
			t.Fatal(err)
		}
		if r1.Held() != 0 || r2.Held() != 5 {
			t.Errorf("held %d and %d, want 0 and 5", r1.Held(), r2.Held())
		}
	})
}

func TestAcquireWaitIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(10, 30*time.Second)
		r1, r2 := b.Reserve(t.Context()), b.Reserve(t.Context())
		if err := r1.Acquire(10); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := r2.Acquire(1)
		if !errors.Is(err, budget.ErrExhausted) || !strings.Contains(err.Error(), "within 30s") {
			t.Errorf("err = %v, want ErrExhausted after the wait", err)
		}
		if waited := time.Since(start); waited != 30*time.Second {
			t.Errorf("waited %v, want 30s", waited)
		}
		if r2.Held() != 0 || b.InUse() != 10 {
			t.Errorf("after a failed Acquire: held %d, in use %d; want 0 and 10", r2.Held(), b.InUse())
		}
	})
}

func TestAcquireEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(10, time.Hour)
		ctx, cancel := context.WithCancelCause(t.Context())
		r1, r2 := b.Reserve(t.Context()), b.Reserve(ctx)
		if err := r1.Acquire(10); err != nil {
			t.Fatal(err)
		}
		done := acquire(&r2, 1)
		synctest.Wait()
		cause := errors.New("connection closed")
		cancel(cause)
		if err := <-done; err != cause {
			t.Errorf("err = %v, want the context's cause", err)
		}
	})
}

func TestAcquireMoreThanTheBudget(t *testing.T) {
	b := budget.New(10, time.Hour)
	r := b.Reserve(t.Context())
	if err := r.Acquire(11); !errors.Is(err, budget.ErrExhausted) || !strings.Contains(err.Error(), "the whole budget is 10") {
		t.Errorf("err = %v, want ErrExhausted at once naming the budget", err)
	}
}

func TestNilBudgetBoundsNothing(t *testing.T) {
	var b *budget.Budget
	r := b.Reserve(t.Context())
	if err := r.Acquire(1 << 60); err != nil {
		t.Fatal(err)
	}
	r.Release()
	if b.Size() != 0 || b.InUse() != 0 || r.Budget() != nil {
		t.Error("a nil Budget has a size or bytes in use")
	}
}

func TestNewDefaults(t *testing.T) {
	if got := budget.New(0, 0).Size(); got != budget.DefaultSize {
		t.Errorf("Size = %d, want DefaultSize", got)
	}
}
