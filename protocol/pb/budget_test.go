package pb

import (
	"bytes"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
)

// TestMessagesShareTheBudget: two connections' decoders share a budget; a
// message past its first 256 KiB reserves, keeps what it took until
// handled, and another that needs more than is left waits until then (or
// fails after the budget's wait).
func TestMessagesShareTheBudget(t *testing.T) {
	big := tokens(func(w *writer) {
		w.list(2)
		w.atom("message")
		w.number(300<<10, tokString)
		w.b = append(w.b, make([]byte, 300<<10)...)
	})
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(1<<20, time.Minute)
		decoders := make([]*decoder, 3)
		for i := range decoders {
			decoders[i] = &decoder{reader: newReader(bytes.NewReader(big), Limits{}, b.Reserve(t.Context())), refs: map[int64]any{}}
		}
		if _, err := decoders[0].message(); err != nil {
			t.Fatal(err)
		}
		if held, took := b.InUse(), decoders[0].alloc; held != int64(took) {
			t.Errorf("a decoded message holds %d bytes of the budget, want the %d it took", held, took)
		}
		done := make(chan error, 1)
		go func() {
			_, err := decoders[1].message()
			done <- err
		}()
		synctest.Wait()
		if len(done) > 0 {
			t.Fatal("a message was decoded beside another that holds the budget it needs")
		}
		decoders[0].release() // handled
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := decoders[2].message()
		if !errors.Is(err, ErrTooLarge) || !errors.Is(err, budget.ErrExhausted) || time.Since(start) != time.Minute {
			t.Errorf("after %v: %v, want ErrTooLarge and ErrExhausted after the budget's wait", time.Since(start), err)
		}
	})
}
