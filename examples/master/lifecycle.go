package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/latent"
)

// managerShutdownTimeout bounds the manager's and the servers' shutdown,
// once builds and latent instances are done.
const managerShutdownTimeout = 10 * time.Second

// awaitStartupBuilds waits until the at_start builds have finished and
// every latent slave has stopped, and reports whether the builds
// succeeded; false too if ctx ends first.
func (m *master) awaitStartupBuilds(ctx context.Context) bool {
	ok := true
	for _, h := range m.atStart {
		select {
		case <-h.Done():
			ok = ok && h.State() == builds.Success
		case <-ctx.Done():
			return false
		}
	}
	for !m.latentStopped() {
		select {
		case <-m.latentC:
		case <-ctx.Done():
			return false
		}
	}
	return ok
}

// latentStopped reports whether no latent slave has an instance.
func (m *master) latentStopped() bool {
	lc := m.lifecycle()
	if lc == nil {
		return true
	}
	for _, st := range lc.Statuses() {
		if st.State != latent.Stopped && st.State != latent.Quarantined {
			return false
		}
	}
	return true
}

// shutdown stops the master: no new builds, running builds drained for up
// to drain (then aborted), every latent instance stopped within stop, then
// the manager and the servers. Its error names each instance it could not
// stop.
func (m *master) shutdown(drain, stop time.Duration) error {
	m.scheds.Stop()
	m.stopClaiming()
	m.progress("shutting down: waiting up to %v for running builds", drain)
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	if err := m.runner.Shutdown(ctx); err != nil {
		m.log.Warn("builds still running at the drain deadline were aborted", "drain_timeout", drain)
	}
	cancel()
	var errs []error
	if lc := m.lifecycle(); lc != nil {
		m.progress("stopping every latent instance (up to %v)", stop)
		ctx, cancel := context.WithTimeout(context.Background(), stop)
		if err := lc.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("latent instances not stopped: %w", err))
			lc.Close()
		}
		cancel()
	}
	ctx, cancel = context.WithTimeout(context.Background(), managerShutdownTimeout)
	defer cancel()
	if err := m.mgr.Shutdown(ctx); err != nil {
		m.log.Warn("slave manager shutdown", "err", err)
	}
	m.mgr.Close()
	if err := m.pb.Shutdown(ctx); err != nil {
		m.log.Warn("Perspective Broker server shutdown", "err", err)
	}
	if err := m.proto.Shutdown(ctx); err != nil {
		m.log.Warn("msgpack server shutdown", "err", err)
	}
	if err := m.web.Shutdown(ctx); err != nil {
		m.log.Warn("web server shutdown", "err", err)
	}
	m.guard.Close()
	m.status.Close()
	m.events()
	m.wg.Wait()
	m.closeDrivers()
	m.leaveCluster()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.progress("stopped")
	return nil
}
