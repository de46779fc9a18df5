package slave

import (
	"sync"
	"time"
)

// EventKind says what happened to a slave.
type EventKind int

// The kinds of Event.
const (
	Attached          EventKind = iota + 1 // a connection registered
	Detached                               // the connection was lost or closed; Err says why
	Missing                                // detached for longer than missing_timeout
	Refused                                // a login or attach was refused; Err says why
	Paused                                 // an operator paused the slave
	Unpaused                               // an operator unpaused the slave
	ShutdownRequested                      // graceful shutdown was requested
	BuildStarted                           // a build slot was granted
	BuildFinished                          // a build slot was freed; Err says why
)

var kindNames = [...]string{"", "attached", "detached", "missing", "refused", "paused", "unpaused", "shutdown-requested", "build-started", "build-finished"}

func (k EventKind) String() string {
	if k <= 0 || int(k) >= len(kindNames) {
		return "unknown"
	}
	return kindNames[k]
}

// Event is one change of a slave's state.
type Event struct {
	Kind  EventKind
	Slave string
	Time  time.Time
	Err   error // the reason, for Detached, Refused and BuildFinished
	// Running is how many builds the slave runs after a BuildStarted or
	// BuildFinished.
	Running int
}

// Subscribe returns a channel that receives every event from now on, in
// order, and a function that ends the subscription. Events queue without
// bound while the reader is slow, so the manager never waits for it. After
// Close the channel yields the events still queued and is then closed;
// cancel closes it at once. Every subscription must end by reading the
// channel until it is closed, or by calling cancel.
func (m *Manager) Subscribe() (events <-chan Event, cancel func()) {
	s := &subscriber{wake: make(chan struct{}, 1), out: make(chan Event), done: make(chan struct{})}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		close(s.out)
		return s.out, func() {}
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	go s.forward() // owned by the subscription: ends at cancel, or once drained after Close
	return s.out, func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
		s.cancel()
	}
}

// emit queues ev for every subscriber; m.mu is held.
func (m *Manager) emit(ev Event) {
	for s := range m.subs {
		s.push(ev)
	}
}

// subscriber is one Subscribe call: an unbounded queue and the goroutine
// that forwards it to out.
type subscriber struct {
	mu     sync.Mutex
	queue  []Event
	ending bool // the manager closed: close out once the queue is empty
	wake   chan struct{}
	out    chan Event
	done   chan struct{} // closed by cancel
	once   sync.Once
}

func (s *subscriber) push(ev Event) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) cancel() { s.once.Do(func() { close(s.done) }) }

// end lets the subscriber deliver what is queued, then close its channel.
func (s *subscriber) end() {
	s.mu.Lock()
	s.ending = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) forward() {
	defer close(s.out)
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			ending := s.ending
			s.mu.Unlock()
			if ending {
				return
			}
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		ev := s.queue[0]
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		s.mu.Unlock()
		select {
		case s.out <- ev:
		case <-s.done:
			return
		}
	}
}
