package slave

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"time"
)

// Build holds one build slot on one attached slave, from Acquire until
// Release. Its Context is cancelled when the build should stop: with a
// cause wrapping ErrSlaveLost when the slave's connection is lost.
type Build struct {
	m       *Manager
	e       *entry
	att     *attachment
	ctx     context.Context
	cancel  context.CancelCauseFunc
	started time.Time
}

// Slave is the name of the slave the build runs on.
func (b *Build) Slave() string { return b.e.name }

// Conn is the connection to run the build's remote commands on. Use the
// transport's own type (for example *protocol.Conn) through a type
// assertion for commands beyond Conn's methods.
func (b *Build) Conn() Conn { return b.att.conn }

// Context is done when the slave is lost, the build is released or the
// manager closes; context.Cause says which.
func (b *Build) Context() context.Context { return b.ctx }

// Properties returns a copy of the slave's properties, including
// slavename, as configured now: a Reconfigure during the build shows.
func (b *Build) Properties() map[string]any {
	b.m.mu.Lock()
	cfg := b.e.cfg
	b.m.mu.Unlock()
	return cfg.Properties()
}

// Started is when the slot was granted.
func (b *Build) Started() time.Time { return b.started }

// Release frees the build slot. It is idempotent, and safe after the slave
// was lost (the slot is already free then).
func (b *Build) Release() {
	m := b.m
	m.mu.Lock()
	if _, ok := b.e.builds[b]; !ok {
		m.mu.Unlock()
		return
	}
	m.endBuild(b, errBuildReleased)
	e := b.e
	idle := e.att == b.att && len(e.builds) == 0
	switch {
	case idle && e.removed:
		m.mu.Unlock()
		m.log.Info("slave removed from the configuration; disconnecting after its last build", "slave", e.name)
		b.att.lose(errRemoved)
		return
	case idle && e.shuttingDown:
		m.requestShutdown(b.att)
	default:
		m.serveWaiters(e)
	}
	m.mu.Unlock()
}

var errBuildReleased = errors.New("build released")

// endBuild frees b's slot; m.mu is held.
func (m *Manager) endBuild(b *Build, cause error) {
	delete(b.e.builds, b)
	b.cancel(cause)
	m.running--
	if m.running == 0 && m.drained != nil {
		select {
		case <-m.drained:
		default:
			close(m.drained)
		}
	}
	m.emit(Event{Kind: BuildFinished, Slave: b.e.cfg.name, Time: time.Now(), Err: cause, Running: len(b.e.builds)})
}

// Acquire waits for a build slot on one of the named slaves, preferring an
// attached slave with no build running, and returns it. It fails at once
// with ErrUnknownSlave if a name is not configured; otherwise it waits
// until a slot frees or ctx is done.
func (m *Manager) Acquire(ctx context.Context, names ...string) (*Build, error) {
	return m.acquire(ctx, names, true)
}

// TryAcquire is Acquire without waiting: it fails with ErrNoSlot when no
// named slave has a free slot now.
func (m *Manager) TryAcquire(names ...string) (*Build, error) {
	return m.acquire(context.Background(), names, false)
}

// waiter is one blocked Acquire, queued on each slave it named.
type waiter struct {
	ch    chan grant // buffered: one grant, sent under m.mu
	elems []waitElem
}

type waitElem struct {
	e  *entry
	el *list.Element
}

type grant struct {
	b   *Build
	err error
}

func (m *Manager) acquire(ctx context.Context, names []string, wait bool) (*Build, error) {
	if len(names) == 0 {
		return nil, errors.New("slave: Acquire needs at least one slave name")
	}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	entries := make([]*entry, 0, len(names))
	for _, n := range names {
		e := m.slaves[n]
		if e == nil || e.removed {
			m.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrUnknownSlave, n)
		}
		entries = append(entries, e)
	}
	if e := best(entries); e != nil {
		b := m.grant(e)
		m.mu.Unlock()
		return b, nil
	}
	if !wait {
		m.mu.Unlock()
		return nil, ErrNoSlot
	}
	w := &waiter{ch: make(chan grant, 1), elems: make([]waitElem, 0, len(entries))}
	var detached []string // controlled ones, for the Controller
	for _, e := range entries {
		w.elems = append(w.elems, waitElem{e, e.waiters.PushBack(w)})
		if e.att == nil && e.controlled {
			detached = append(detached, e.cfg.name)
		}
	}
	m.mu.Unlock()
	m.want(detached...)

	select {
	case g := <-w.ch:
		return g.b, g.err
	case <-ctx.Done():
		m.mu.Lock()
		unlink(w)
		m.mu.Unlock()
		select {
		case g := <-w.ch: // granted just before we unlinked
			if g.b != nil {
				g.b.Release()
			}
		default:
		}
		return nil, context.Cause(ctx)
	}
}

// available reports whether e can take a build now; m.mu is held.
func (e *entry) available() bool {
	return e.att != nil && !e.paused && !e.shuttingDown && !e.draining && !e.removed &&
		(e.cfg.maxBuilds == 0 || len(e.builds) < e.cfg.maxBuilds)
}

// best picks the slave to build on: an idle one first, else the least busy.
func best(entries []*entry) *entry {
	var pick *entry
	for _, e := range entries {
		if !e.available() {
			continue
		}
		if len(e.builds) == 0 {
			return e
		}
		if pick == nil || len(e.builds) < len(pick.builds) {
			pick = e
		}
	}
	return pick
}

// grant takes a slot on e; m.mu is held and e is available.
func (m *Manager) grant(e *entry) *Build {
	ctx, cancel := context.WithCancelCause(context.Background())
	b := &Build{m: m, e: e, att: e.att, ctx: ctx, cancel: cancel, started: time.Now()}
	e.builds[b] = struct{}{}
	m.running++
	m.emit(Event{Kind: BuildStarted, Slave: e.cfg.name, Time: b.started, Running: len(e.builds)})
	return b
}

// serveWaiters hands e's free slots to its oldest waiters; m.mu is held.
func (m *Manager) serveWaiters(e *entry) {
	for e.available() && e.waiters.Len() > 0 {
		w := e.waiters.Front().Value.(*waiter)
		unlink(w)
		w.ch <- grant{b: m.grant(e)}
	}
}

// failWaiters drops e from its waiters' lists; a waiter left with no slave
// to wait for gets err. m.mu is held.
func (m *Manager) failWaiters(e *entry, err error) {
	for el := e.waiters.Front(); el != nil; {
		next := el.Next()
		w := el.Value.(*waiter)
		e.waiters.Remove(el)
		for i, we := range w.elems {
			if we.e == e {
				w.elems = append(w.elems[:i], w.elems[i+1:]...)
				break
			}
		}
		if len(w.elems) == 0 {
			w.ch <- grant{err: err}
		}
		el = next
	}
}

// unlink removes w from every queue it is in; m.mu is held.
func unlink(w *waiter) {
	for _, we := range w.elems {
		we.e.waiters.Remove(we.el)
	}
	w.elems = nil
}
