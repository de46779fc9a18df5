package builds

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Schedulers starts builds on schedule: the at_start builds once, and the
// periodic ones until Replace or Stop.
type Schedulers struct {
	// Periodic, if set before Start, forces the periodic builds instead of
	// the Runner: through the build queue of a cluster of masters, for
	// instance.
	Periodic ForceFunc
	// Active, if set before Start, says whether this master runs the
	// periodic schedules now (in a cluster: while it leads, so that a
	// periodic build is forced once, not once per master); a tick while it
	// is not is skipped.
	Active func() bool

	r   *Runner
	log *slog.Logger

	mu     sync.Mutex // serialises Start, Replace and Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewSchedulers returns Schedulers that force builds on r.
func NewSchedulers(r *Runner, log *slog.Logger) *Schedulers {
	return &Schedulers{r: r, log: log, cancel: func() {}}
}

// Start forces the builds of the schedules with AtStart, starts the
// periodic ones, and returns the builds it forced.
func (s *Schedulers) Start(ss []Schedule) []*Handle {
	var started []*Handle
	for _, sc := range ss {
		if !sc.AtStart {
			continue
		}
		h, err := s.r.Force(sc.Builder, "at_start scheduler")
		if err != nil {
			s.log.Warn("at_start build not started", "builder", sc.Builder, "err", err)
			continue
		}
		started = append(started, h)
	}
	s.Replace(ss)
	return started
}

// Replace stops the periodic schedules and starts those of ss; AtStart
// does not run again.
func (s *Schedulers) Replace(ss []Schedule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, sc := range ss {
		if sc.Every > 0 {
			s.wg.Go(func() { s.periodic(ctx, sc) })
		}
	}
}

// Stop stops the periodic schedules and waits for them.
func (s *Schedulers) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
}

func (s *Schedulers) stop() {
	s.cancel()
	s.wg.Wait()
}

// periodic forces a build of sc.Builder every sc.Every until ctx ends.
func (s *Schedulers) periodic(ctx context.Context, sc Schedule) {
	force := s.Periodic
	if force == nil {
		force = s.r.ForceID
	}
	t := time.NewTicker(sc.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.Active != nil && !s.Active() {
			continue
		}
		if _, err := force(sc.Builder, "periodic scheduler, every "+sc.Every.String()); err != nil {
			if errors.Is(err, ErrShuttingDown) {
				return
			}
			s.log.Warn("periodic build not started", "builder", sc.Builder, "err", err)
		}
	}
}
