package ec2

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/buildslave/buildslave/internal/testlog"
)

// describer is an in-memory DescribeInstances: it answers with the
// instances' current states, or, while hang is set, waits for the call's
// context to end. It records when each call came.
type describer struct {
	start time.Time

	mu     sync.Mutex
	states map[string]types.InstanceStateName
	hang   bool
	calls  []time.Duration
}

func newDescriber() *describer {
	return &describer{start: time.Now(), states: map[string]types.InstanceStateName{}}
}

func (d *describer) set(id string, st types.InstanceStateName) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states[id] = st
}

func (d *describer) DescribeInstances(ctx context.Context, _ *awsec2.DescribeInstancesInput, _ ...func(*awsec2.Options)) (*awsec2.DescribeInstancesOutput, error) {
	d.mu.Lock()
	d.calls = append(d.calls, time.Since(d.start))
	hang := d.hang
	var r types.Reservation
	for id, st := range d.states {
		r.Instances = append(r.Instances, types.Instance{InstanceId: aws.String(id), State: &types.InstanceState{Name: st}})
	}
	d.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &awsec2.DescribeInstancesOutput{Reservations: []types.Reservation{r}}, nil
}

func (d *describer) callTimes() []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// loopEnded reports whether the poller's loop has ended, once the
// bubble's goroutines are blocked.
func loopEnded(p *poller) bool {
	synctest.Wait()
	ended := make(chan struct{})
	go func() { p.wg.Wait(); close(ended) }()
	synctest.Wait()
	select {
	case <-ended:
		return true
	default:
		return false
	}
}

const interval = 5 * time.Second

func TestPollerBatchesWaitersOncePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDescriber()
		p := newPoller(d, interval, slog.New(slog.DiscardHandler))
		defer p.close()
		for _, id := range []string{"i-1", "i-2", "i-3"} {
			d.set(id, types.InstanceStateNamePending)
		}
		time.AfterFunc(7*time.Second, func() { d.set("i-1", types.InstanceStateNameRunning) })
		time.AfterFunc(12*time.Second, func() {
			d.set("i-2", types.InstanceStateNameRunning)
			d.set("i-3", types.InstanceStateNameTerminated)
		})
		var wg sync.WaitGroup
		done := map[string]time.Duration{}
		var mu sync.Mutex
		for _, id := range []string{"i-1", "i-2", "i-3"} {
			wg.Go(func() {
				if _, err := p.wait(t.Context(), id, "m1", untilRunning); err != nil {
					t.Error(err)
				}
				mu.Lock()
				done[id] = time.Since(d.start)
				mu.Unlock()
			})
		}
		wg.Wait()
		if want := []time.Duration{0, interval, 2 * interval, 3 * interval}; !slices.Equal(d.callTimes(), want) {
			t.Errorf("describes at %v, want one per interval: %v", d.callTimes(), want)
		}
		if done["i-1"] != 2*interval || done["i-2"] != 3*interval || done["i-3"] != 3*interval {
			t.Errorf("waits ended at %v", done)
		}
		if !loopEnded(p) {
			t.Error("the loop still runs with no waiter left")
		}
	})
}

// TestPollerEndsWhenTheLastWaiterLeaves: the loop does not sleep out its
// interval, nor poll again, once nobody waits.
func TestPollerEndsWhenTheLastWaiterLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDescriber()
		d.set("i-1", types.InstanceStateNamePending)
		p := newPoller(d, interval, slog.New(slog.DiscardHandler))
		defer p.close()
		ctx, cancel := context.WithTimeout(t.Context(), 7*time.Second)
		defer cancel()
		if _, err := p.wait(ctx, "i-1", "m1", untilRunning); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait = %v", err)
		}
		if !loopEnded(p) {
			t.Fatal("the loop still runs after its last waiter left")
		}
		if got := time.Since(d.start); got != 7*time.Second {
			t.Errorf("the loop ended at %v, want 7s, when its waiter left", got)
		}
		if want := []time.Duration{0, interval}; !slices.Equal(d.callTimes(), want) {
			t.Errorf("describes at %v, want %v", d.callTimes(), want)
		}

		// A loop started soon after still waits out the interval.
		time.Sleep(time.Second) // t = 8s; the last poll was at 5s
		if _, err := p.wait(t.Context(), "i-1", "m1", anyObservation); err != nil {
			t.Fatal(err)
		}
		if got := d.callTimes(); got[len(got)-1] != 2*interval {
			t.Errorf("describes at %v, want the next one at %v", got, 2*interval)
		}
	})
}

// TestPollerAbandonsADescribeNobodyWaitsFor: a describe in flight when the
// last waiter leaves is cancelled, and its failure is not logged.
func TestPollerAbandonsADescribeNobodyWaitsFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDescriber()
		d.hang = true
		logs := &testlog.Buffer{}
		p := newPoller(d, interval, slog.New(slog.NewTextHandler(logs, nil)))
		defer p.close()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := p.wait(ctx, "i-1", "m1", untilRunning); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait = %v", err)
		}
		if !loopEnded(p) || time.Since(d.start) != time.Second {
			t.Fatalf("at %v the loop has not ended with its describe", time.Since(d.start))
		}
		if strings.Contains(logs.String(), "failed") {
			t.Errorf("an abandoned describe was logged as a failure: %s", logs)
		}
	})
}

// TestPollerCloseEndsWaitsAndLoop: close returns once the loop has ended,
// even with a describe hanging, and every wait, then and later, returns
// ErrClosed.
func TestPollerCloseEndsWaitsAndLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDescriber()
		d.hang = true
		p := newPoller(d, interval, slog.New(slog.DiscardHandler))
		errc := make(chan error)
		go func() {
			_, err := p.wait(t.Context(), "i-1", "m1", untilRunning)
			errc <- err
		}()
		time.Sleep(3 * time.Second)
		p.close()
		if got := time.Since(d.start); got != 3*time.Second {
			t.Errorf("close returned at %v, want at once (3s)", got)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("wait = %v, want ErrClosed", err)
		}
		if _, err := p.wait(t.Context(), "i-1", "m1", untilRunning); !errors.Is(err, ErrClosed) {
			t.Errorf("wait after close = %v, want ErrClosed", err)
		}
		if !loopEnded(p) {
			t.Error("a loop runs after close")
		}
		p.close() // idempotent
	})
}
