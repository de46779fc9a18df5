package attachtimer

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// conn is a connection whose end wakes the step waiting on it.
type conn struct {
	ctx   context.Context
	close context.CancelCauseFunc
	ended []string
}

func newConn() *conn {
	c := &conn{}
	c.ctx, c.close = context.WithCancelCause(context.Background())
	return c
}

func (c *conn) end(cause error) {
	c.ended = append(c.ended, cause.Error())
	c.close(cause)
}

// wait is a step that waits for an answer that comes after d, or for the
// connection's end.
func (c *conn) wait(d time.Duration) func() error {
	return func() error {
		select {
		case <-time.After(d):
			return nil
		case <-c.ctx.Done():
			return errors.New("connection lost")
		}
	}
}

// TestEachStepHasItsOwnBound: steps that each answer within the step
// timeout pass, however long the sequence, until its total runs out; a
// step that does not answer ends the connection with its name, once.
func TestEachStepHasItsOwnBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newConn()
		start := time.Now()
		tm := Start(10*time.Second, time.Minute, c.end)
		defer tm.Stop()
		for _, name := range []string{"a", "b", "c"} {
			if err := tm.Step(name, c.wait(9*time.Second)); err != nil {
				t.Fatalf("step %s: %v", name, err)
			}
		}
		err := tm.Step("slow", c.wait(time.Hour))
		if err == nil || err.Error() != "slow: no answer within 10s" || time.Since(start) != 37*time.Second {
			t.Errorf("a step without an answer = %v after %v, want its name and the bound after 37s", err, time.Since(start))
		}
		tm.Step("after", c.wait(time.Hour))
		synctest.Wait()
		if len(c.ended) != 1 || c.ended[0] != "slow: no answer within 10s" {
			t.Errorf("the connection was ended with %q, want once", c.ended)
		}
	})
}

// TestTheWholeSequenceHasABound: steps each within their bound end the
// connection once the total runs out; Rest waits for the total alone.
func TestTheWholeSequenceHasABound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newConn()
		start := time.Now()
		tm := Start(10*time.Second, 25*time.Second, c.end)
		defer tm.Stop()
		tm.Step("a", c.wait(9*time.Second))
		tm.Rest()
		time.Sleep(15 * time.Second) // more than a step, within the total
		if len(c.ended) != 0 {
			t.Fatalf("ended after %v: %q", time.Since(start), c.ended)
		}
		err := tm.Step("b", c.wait(9*time.Second))
		if err == nil || err.Error() != "attach sequence took longer than 25s" || time.Since(start) != 25*time.Second {
			t.Errorf("a step past the total = %v after %v", err, time.Since(start))
		}
	})
}

// TestStoppedFiresNothing: a sequence over in time ends nothing.
func TestStoppedFiresNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newConn()
		tm := Start(time.Second, time.Minute, c.end)
		tm.Step("a", c.wait(time.Millisecond))
		tm.Stop()
		time.Sleep(time.Hour)
		if len(c.ended) != 0 {
			t.Errorf("a stopped timer ended the connection: %q", c.ended)
		}
	})
}

// TestBeforeTheFirstStep: a sequence stuck before its first step (a write
// the peer never reads) ends at the step timeout too.
func TestBeforeTheFirstStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newConn()
		tm := Start(time.Second, time.Minute, c.end)
		defer tm.Stop()
		<-c.ctx.Done()
		if len(c.ended) != 1 || c.ended[0] != "no answer within 1s" {
			t.Errorf("ended with %q", c.ended)
		}
	})
}
