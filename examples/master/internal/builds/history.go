package builds

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/buildslave/buildslave/examples/master/status"
)

// Defaults of a History.
const (
	DefaultHistory   = 100      // builds kept
	DefaultStepBytes = 64 << 10 // the tail of each step's output kept
)

// The states of a build and of a step, as the status page shows them.
const (
	Waiting   = "waiting"   // for a build slot
	Running   = "running"   // on a slave
	Success   = "success"   // every step passed
	Failure   = "failure"   // a step exited non-zero
	Exception = "exception" // a step could not run: slave lost, command error, aborted
)

// History keeps the most recent builds with each step's output: the
// status page's status.Builds. Its methods are safe for concurrent use.
type History struct {
	max       int
	stepBytes int

	mu     sync.Mutex // guards everything below and every record
	nextID int
	builds []*record // oldest first
}

var _ status.Builds = (*History)(nil)

// record is one build; History.mu guards it.
type record struct {
	status.Build
	steps []*stepRecord
}

// stepRecord is one step; its output is kept as the last stepBytes.
type stepRecord struct {
	status.Step
	out     []byte
	dropped int64 // bytes of output dropped from out's head
}

// NewHistory returns a History of the last max builds that keeps the last
// stepBytes of each step's output; zero values mean the defaults.
func NewHistory(max, stepBytes int) *History {
	if max <= 0 {
		max = DefaultHistory
	}
	if stepBytes <= 0 {
		stepBytes = DefaultStepBytes
	}
	return &History{max: max, stepBytes: stepBytes}
}

// Recent returns the newest n builds, newest first.
func (h *History) Recent(n int) []status.Build {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.newest(h.builds, n)
}

// Before returns the newest n builds older than build id, newest first.
func (h *History) Before(id, n int) []status.Build {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, _ := slices.BinarySearchFunc(h.builds, id, func(r *record, id int) int { return cmp.Compare(r.ID, id) })
	return h.newest(h.builds[:i], n)
}

// newest returns the newest n of builds, newest first; h.mu is held.
func (h *History) newest(builds []*record, n int) []status.Build {
	n = min(max(n, 0), len(builds))
	out := make([]status.Build, 0, n)
	for _, r := range slices.Backward(builds[len(builds)-n:]) {
		b := r.Build
		b.Steps = make([]status.Step, len(r.steps))
		for i, s := range r.steps {
			b.Steps[i] = s.Step
			out, dropped := s.out, s.dropped
			if over := len(out) - h.stepBytes; over > 0 {
				out, dropped = out[over:], dropped+int64(over)
			}
			b.Steps[i].Output = string(out)
			if dropped > 0 {
				b.Steps[i].Output = fmt.Sprintf("[... %d bytes of earlier output not shown]\n", dropped) + b.Steps[i].Output
			}
		}
		out = append(out, b)
	}
	return out
}

// add records a new waiting build and returns it.
func (h *History) add(builder, reason string) *record {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	r := &record{Build: status.Build{ID: h.nextID, Builder: builder, Reason: reason, State: Waiting, Queued: time.Now()}}
	h.builds = append(h.builds, r)
	if len(h.builds) > h.max {
		h.builds = slices.Delete(h.builds, 0, len(h.builds)-h.max)
	}
	return r
}

// started marks r running on slaveName.
func (h *History) started(r *record, slaveName string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Slave, r.State, r.Started = slaveName, Running, time.Now()
}

// finished gives r its result.
func (h *History) finished(r *record, state string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.State, r.Finished = state, time.Now()
}

// state returns r's state.
func (h *History) state(r *record) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return r.State
}

// step starts a step of r and returns it.
func (h *History) step(r *record, name string) *stepRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &stepRecord{Step: status.Step{Name: name, State: Running}}
	r.steps = append(r.steps, s)
	return s
}

// output adds text to s's output. It keeps up to twice stepBytes, so
// that dropping the head is rare; Recent shows the last stepBytes. It
// reports whether it dropped output.
func (h *History) output(s *stepRecord, text string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	dropped := s.dropped
	if over := len(text) - h.stepBytes; over > 0 { // only its tail can be shown
		s.dropped += int64(len(s.out) + over)
		s.out, text = s.out[:0], text[over:]
	}
	s.out = append(s.out, text...)
	if over := len(s.out) - h.stepBytes; len(s.out) > 2*h.stepBytes {
		s.out = slices.Clone(s.out[over:])
		s.dropped += int64(over)
	}
	return s.dropped > dropped
}

// stepDone gives s its result.
func (h *History) stepDone(s *stepRecord, state string, rc int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.State, s.RC = state, rc
}
