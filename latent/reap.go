package latent

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Reap stops the instances tagged with this master's MasterID that the
// Lifecycle does not track: those a crashed or restarted master left
// behind. It asks every driver that implements Lister, never touches an
// instance tagged with another master, and leaves alone the instances of
// a slave whose Start is under way. It returns the instances it stopped
// and one error per List or Stop that failed. New runs it once, then
// every Config.ReapInterval.
func (l *Lifecycle) Reap(ctx context.Context) ([]Instance, error) {
	var reaped []Instance
	var errs []error
	seen := l.instances() // tracked before List: one stopped meanwhile is not an orphan
	for _, s := range l.list() {
		s.mu.Lock()
		ls := s.ls
		s.unlock()
		lister, ok := ls.(Lister)
		if !ok {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, l.cfg.StopTimeout)
		insts, err := lister.List(lctx, l.cfg.MasterID)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("latent slave %s: list instances: %w", s.name, err))
			continue
		}
		for _, inst := range insts {
			if inst.MasterID != l.cfg.MasterID || seen[inst.ID] || l.tracked(inst) {
				continue
			}
			seen[inst.ID] = true
			if err := s.reap(ctx, ls, inst); err != nil {
				errs = append(errs, err)
				continue
			}
			reaped = append(reaped, inst)
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		l.log.Error("latent: reaping left-behind instances failed", "reason", err.Error())
	}
	return reaped, err
}

// instances returns the ids of the instances the Lifecycle tracks.
func (l *Lifecycle) instances() map[string]bool {
	ids := make(map[string]bool)
	for _, s := range l.list() {
		s.mu.Lock()
		if s.inst != nil {
			ids[s.inst.ID] = true
		}
		s.unlock()
	}
	return ids
}

// tracked reports whether inst is an instance the Lifecycle knows, or may
// be one whose Start has not returned yet.
func (l *Lifecycle) tracked(inst Instance) bool {
	s := l.lookup(inst.Slave)
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.unlock()
	return s.starting || s.inst != nil && s.inst.ID == inst.ID
}

// reap stops an untracked instance through ls, s's driver, which listed it.
func (s *latentSlave) reap(ctx context.Context, ls LatentSlave, inst Instance) error {
	ctx, cancel := context.WithTimeout(ctx, s.l.cfg.StopTimeout)
	defer cancel()
	s.op.Lock()
	err := ls.Stop(ctx, inst)
	s.op.Unlock()
	log := s.l.log.With("slave", inst.Slave, "instance", inst.ID, "master_id", inst.MasterID, "started", inst.Started)
	if err != nil {
		log.Error("latent: could not stop an instance this master does not track", "reason", err.Error())
		return fmt.Errorf("stop untracked instance %s of slave %s: %w", inst.ID, inst.Slave, err)
	}
	const why = "left behind by an earlier run of this master"
	log.Warn("latent: stopped an instance this master does not track", "reason", why)
	if observe := s.l.cfg.Observe; observe != nil {
		now := time.Now()
		observe(Event{Slave: inst.Slave, Since: now, Time: now, Reason: why, Instance: inst.ID, Reaped: true})
	}
	return nil
}

// reapEvery runs Reap every Config.ReapInterval until Close.
func (l *Lifecycle) reapEvery() {
	t := time.NewTicker(l.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			_, _ = l.Reap(l.ctx) // it logs its outcome
		}
	}
}
