// Package runqueue runs functions in arrival order, at most a bound at a
// time, on goroutines that each run one function after another: a
// function waiting its turn holds no goroutine, and no goroutine waits
// idle once none waits. The slave ports run attach sequences through one,
// so that a storm of slaves dialing at once has a bounded number of
// sequences, and their stacks, in flight.
package runqueue

import "sync"

// Queue is a queue of functions to run; the zero value is empty.
type Queue struct {
	mu      sync.Mutex
	waiting []func()
	running int // goroutines running functions
}

// Go queues f and starts a goroutine for it if fewer than limit run;
// a limit below 1 means 1.
func (q *Queue) Go(limit int, f func()) {
	q.mu.Lock()
	q.waiting = append(q.waiting, f)
	start := q.running < max(limit, 1)
	if start {
		q.running++
	}
	q.mu.Unlock()
	if start {
		go q.work()
	}
}

// work runs the waiting functions until none waits.
func (q *Queue) work() {
	for {
		q.mu.Lock()
		if len(q.waiting) == 0 {
			q.running--
			q.waiting = nil // keeps no array once the storm is over
			q.mu.Unlock()
			return
		}
		f := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		q.mu.Unlock()
		f()
	}
}
