package ec2

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/buildslave/buildslave/internal/backoff"
)

// observation is what one poll saw of an instance.
type observation struct {
	found  bool
	state  types.InstanceStateName
	reason string // the state reason, once the instance stops
	absent int    // how many polls in a row have not seen it
}

// waiter is one caller waiting for an instance to reach a condition.
type waiter struct {
	id, master string
	absent     int
	until      func(observation) bool
	result     chan observation // buffered: the poller never blocks on it
}

// poller describes every instance its waiters wait for, all of them in one
// paginated DescribeInstances per interval (filtered by the masters' tag,
// 1,000 instances a page), instead of one loop per instance. Its loop runs
// while there are waiters and ends as soon as none is left, even in the
// middle of a wait or a describe; it never polls more often than once per
// interval. Every wait of the loop follows a context: the loop's own,
// cancelled when its last waiter leaves, under the poller's, cancelled by
// close, which then waits for the loop.
type poller struct {
	api      awsec2.DescribeInstancesAPIClient
	interval time.Duration
	log      *slog.Logger
	ctx      context.Context // ended by close
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the loops

	mu      sync.Mutex
	waiters map[*waiter]bool
	stop    context.CancelFunc // ends the running loop; nil while none runs
	next    time.Time          // the earliest time of the next poll
}

func newPoller(api awsec2.DescribeInstancesAPIClient, interval time.Duration, log *slog.Logger) *poller {
	p := &poller{api: api, interval: interval, log: log, waiters: map[*waiter]bool{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// close makes every wait return ErrClosed, and returns once the loop has
// ended.
func (p *poller) close() {
	p.mu.Lock()
	p.cancel() // under mu: no wait starts a loop after this
	p.mu.Unlock()
	p.wg.Wait()
}

// wait blocks until an observation of instance id (tagged with master)
// satisfies until, or ctx ends (its error), or the Client is closed
// (ErrClosed).
func (p *poller) wait(ctx context.Context, id, master string, until func(observation) bool) (observation, error) {
	w := &waiter{id: id, master: master, until: until, result: make(chan observation, 1)}
	p.mu.Lock()
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		return observation{}, ErrClosed
	}
	p.waiters[w] = true
	if p.stop == nil {
		loop, stop := context.WithCancel(p.ctx)
		p.stop = stop
		p.wg.Go(func() { p.loop(loop, stop) })
	}
	p.mu.Unlock()
	select {
	case o := <-w.result:
		return o, nil
	case <-ctx.Done():
		p.leave(w)
		return observation{}, ctx.Err()
	case <-p.ctx.Done():
		p.leave(w)
		select {
		case o := <-w.result: // handed over just before
			return o, nil
		default:
			return observation{}, ErrClosed
		}
	}
}

// leave removes w, and ends the loop if it was the last waiter.
func (p *poller) leave(w *waiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.waiters, w)
	p.endIfIdle()
}

// endIfIdle ends the loop once no waiter is left, at once even while it
// waits for the next poll or a describe; mu is held. The next wait starts
// a new loop.
func (p *poller) endIfIdle() {
	if len(p.waiters) == 0 && p.stop != nil {
		p.stop()
		p.stop = nil
	}
}

// loop polls while there are waiters, at most once per interval: a loop
// started soon after the previous one ended waits out the interval first.
// It ends when ctx does.
func (p *poller) loop(ctx context.Context, stop context.CancelFunc) {
	defer stop()
	for {
		p.mu.Lock()
		d := time.Until(p.next)
		p.mu.Unlock()
		if backoff.Wait(ctx, d) != nil {
			return
		}
		p.mu.Lock()
		if ctx.Err() != nil { // the last waiter left meanwhile
			p.mu.Unlock()
			return
		}
		p.next = time.Now().Add(p.interval)
		p.mu.Unlock()
		p.poll(ctx)
	}
}

// poll describes the instances of the current waiters once and hands each
// waiter its observation. A failed describe (after the SDK's retries) is
// logged and tried again at the next tick, unless ctx ended it.
func (p *poller) poll(ctx context.Context) {
	p.mu.Lock()
	batch := make([]*waiter, 0, len(p.waiters))
	var masters []string
	for w := range p.waiters {
		batch = append(batch, w)
		if !slices.Contains(masters, w.master) {
			masters = append(masters, w.master)
		}
	}
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	seen, err := p.describe(ctx, masters)
	if ctx.Err() != nil {
		return // no waiter is left, or the Client is closed
	}
	if err != nil {
		p.log.Warn("ec2: describing instances failed; will try again", "err", err, "instances", len(batch))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range batch {
		if !p.waiters[w] {
			continue // gave up meanwhile
		}
		o, ok := seen[w.id]
		if ok {
			w.absent = 0
		} else {
			w.absent++
			o.absent = w.absent
		}
		if w.until(o) {
			delete(p.waiters, w)
			w.result <- o
		}
	}
	p.endIfIdle()
}

func (p *poller) describe(ctx context.Context, masters []string) (map[string]observation, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*p.interval+time.Minute)
	defer cancel()
	seen := map[string]observation{}
	err := eachInstance(ctx, p.api, []types.Filter{{Name: aws.String("tag:" + MasterTag), Values: masters}}, func(in types.Instance) {
		o := observation{found: true}
		if in.State != nil {
			o.state = in.State.Name
		}
		if in.StateReason != nil {
			o.reason = aws.ToString(in.StateReason.Message)
		}
		seen[aws.ToString(in.InstanceId)] = o
	})
	return seen, err
}

// eachInstance calls f for every instance the filters match, a page of
// 1,000 at a time.
func eachInstance(ctx context.Context, api awsec2.DescribeInstancesAPIClient, filters []types.Filter, f func(types.Instance)) error {
	in := &awsec2.DescribeInstancesInput{Filters: filters, MaxResults: aws.Int32(1000)}
	for pg := awsec2.NewDescribeInstancesPaginator(api, in); pg.HasMorePages(); {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				f(i)
			}
		}
	}
	return nil
}

// maxAbsent is how many polls in a row may miss a starting instance
// (EC2 is eventually consistent) before it counts as vanished.
const maxAbsent = 3

// untilRunning is satisfied once the instance runs, has stopped or
// terminated, or has been missing for maxAbsent polls.
func untilRunning(o observation) bool {
	if !o.found {
		return o.absent >= maxAbsent
	}
	return o.state != types.InstanceStateNamePending
}

// untilTerminated is satisfied once the instance is terminated or gone.
func untilTerminated(o observation) bool {
	return !o.found || o.state == types.InstanceStateNameTerminated
}

// anyObservation is satisfied by the next poll.
func anyObservation(observation) bool { return true }
