package slave

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// State is a snapshot of one slave, for an application or a status page.
type State struct {
	Name         string
	Attached     bool
	Since        time.Time // attached since, or detached since; zero if it never attached
	LastSeen     time.Time // last attach, keepalive reply or detach
	RemoteAddr   string    // of the attached connection
	Running      int       // builds holding a slot
	MaxBuilds    int       // 0 means no limit
	Properties   map[string]any
	Info         Info // as reported at the last attach
	Paused       bool
	ShuttingDown bool // graceful shutdown requested
	Missing      bool // detached for longer than its missing_timeout
}

// State returns a snapshot of the named slave.
func (m *Manager) State(name string) (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.slaves[name]
	if e == nil || e.removed {
		return State{}, false
	}
	return e.state(), true
}

// States returns a snapshot of every configured slave, sorted by name.
func (m *Manager) States() []State {
	m.mu.Lock()
	out := make([]State, 0, len(m.slaves))
	for _, e := range m.slaves {
		if !e.removed {
			out = append(out, e.state())
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b State) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// state snapshots e; m.mu is held.
func (e *entry) state() State {
	s := State{
		Name:         e.cfg.name,
		Attached:     e.att != nil,
		Since:        e.since,
		LastSeen:     e.lastSeen,
		Running:      len(e.builds),
		MaxBuilds:    e.cfg.maxBuilds,
		Properties:   e.cfg.Properties(),
		Info:         e.info.clone(),
		Paused:       e.paused,
		ShuttingDown: e.shuttingDown,
		Missing:      e.missing,
	}
	if e.att != nil {
		s.RemoteAddr = e.att.conn.RemoteAddr()
	}
	return s
}

// lookup returns the named, configured slave; m.mu is held.
func (m *Manager) lookup(name string) (*entry, error) {
	e := m.slaves[name]
	if e == nil || e.removed {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSlave, name)
	}
	return e, nil
}

// Pause stops the slave from taking new builds; it keeps its connection
// and running builds.
func (m *Manager) Pause(name string) error { return m.setPaused(name, true) }

// Unpause lets a paused slave take builds again.
func (m *Manager) Unpause(name string) error { return m.setPaused(name, false) }

func (m *Manager) setPaused(name string, paused bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	if e.paused == paused {
		return nil
	}
	e.paused = paused
	kind := Paused
	if !paused {
		kind = Unpaused
		m.serveWaiters(e)
	}
	m.emit(Event{Kind: kind, Slave: name, Time: time.Now()})
	return nil
}

// shutdownRequestTimeout bounds the wait for a slave to acknowledge a
// shutdown request.
const shutdownRequestTimeout = 30 * time.Second

// GracefulShutdown stops the attached slave from taking new builds and
// asks the slave process to shut down once its running builds end. The
// flag clears when the slave detaches.
func (m *Manager) GracefulShutdown(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(name)
	if err != nil {
		return err
	}
	if e.att == nil {
		return fmt.Errorf("%w: %q", ErrNotAttached, name)
	}
	if e.shuttingDown {
		return nil
	}
	e.shuttingDown = true
	m.emit(Event{Kind: ShutdownRequested, Slave: name, Time: time.Now()})
	if len(e.builds) == 0 {
		m.requestShutdown(e.att)
	}
	return nil
}

// requestShutdown asks a's slave to shut down, from a goroutine of the
// manager's; m.mu is held.
func (m *Manager) requestShutdown(a *attachment) {
	if m.closed {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(m.ctx, shutdownRequestTimeout)
		defer cancel()
		name := a.entry.name
		m.log.Info("asking slave to shut down", "slave", name)
		if err := a.conn.RequestShutdown(ctx); err != nil {
			m.log.Warn("slave did not accept the shutdown request; dropping its connection", "slave", name, "reason", err.Error())
			a.lose(fmt.Errorf("graceful shutdown: %w", err))
		}
	}()
}
