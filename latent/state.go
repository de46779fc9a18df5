package latent

import (
	"fmt"
	"time"

	"github.com/buildslave/buildslave/internal/backoff"
)

// State is where a latent slave is in its lifecycle:
//
//	                 Want / Substantiate                        attached
//	┌──► Stopped ───────────────────────────► Substantiating ──────────────► Idle ◄──┐
//	│     ▲   ▲                                    │                         │  ▲    │ last build
//	│     │   │ back-off ends                      │ start error, died,      │  │    │ ends
//	│     │   │ (Want pending: substantiate)       │ missing_timeout,        │  └────┼── build starts
//	│     │ Quarantined ◄──── instance stopped ────┤ shutdown                ▼       │
//	│     │                   (after a failure)    │                      Running ───┘
//	│     │                                        ▼                         │
//	│     └──────── instance stopped ───────── Stopping ◄────────────────────┤ detached
//	│               and detached                   ▲                         │ unexpectedly
//	│                                              └── build_wait_timeout ── Idle (drained)
//	└── shutdown ends a quarantine
//
// Stopping lasts until the driver's Stop succeeded (failed stops are
// retried with back-off) and the slave's connection, if any, is gone; a
// Want meanwhile is remembered and substantiates again once Stopped.
type State int

// The states of a latent slave.
const (
	Stopped        State = iota // no instance
	Substantiating              // an instance is being started, or started and not yet attached
	Running                     // attached, with builds running
	Idle                        // attached, no build: build_wait_timeout runs
	Stopping                    // the instance is being stopped
	Quarantined                 // a substantiation failed: none starts before QuarantinedUntil
)

var stateNames = [...]string{"stopped", "substantiating", "running", "idle", "stopping", "quarantined"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// Status is a snapshot of one latent slave, for an application or a status
// page.
type Status struct {
	Name     string
	State    State
	Since    time.Time // when it entered State
	Reason   string    // why it entered State
	Instance Instance  // the current instance; zero while there is none
	Running  int       // builds running on it
	// Failures counts consecutive failed substantiations; an attach
	// resets it.
	Failures int
	// LastError is the last failed substantiation or stop, if any.
	LastError error
	// QuarantinedUntil is when a Quarantined slave may substantiate again.
	QuarantinedUntil time.Time
}

// Status returns a snapshot of the named latent slave.
func (l *Lifecycle) Status(name string) (Status, bool) {
	s := l.lookup(name)
	if s == nil {
		return Status{}, false
	}
	s.mu.Lock()
	defer s.unlock()
	return s.status(), true
}

// Statuses returns a snapshot of every latent slave, sorted by name.
func (l *Lifecycle) Statuses() []Status {
	slaves := l.list()
	out := make([]Status, 0, len(slaves))
	for _, s := range slaves {
		s.mu.Lock()
		out = append(out, s.status())
		s.unlock()
	}
	return out
}

// status snapshots s; s.mu is held.
func (s *latentSlave) status() Status {
	st := Status{
		Name:             s.name,
		State:            s.state,
		Since:            s.since,
		Reason:           s.reason,
		Running:          s.running,
		Failures:         s.failures,
		LastError:        s.lastErr,
		QuarantinedUntil: s.until,
	}
	if s.inst != nil {
		st.Instance = *s.inst
	}
	return st
}

// quarantine is the wait after the n-th consecutive failure (n ≥ 1):
// 10 s, doubling up to an hour.
var quarantine = backoff.Policy{Min: QuarantineMin, Max: QuarantineMax}
