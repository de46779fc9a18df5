package main

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/buildslave/buildslave/examples/master/internal/config"
	"github.com/buildslave/buildslave/latent"
)

// reload re-reads the configuration with load and applies it; on error
// the running configuration stays.
func (m *master) reload(load func() (*config.Config, error)) {
	cfg, err := load()
	if err == nil {
		err = m.reconfigure(cfg)
	}
	if err != nil {
		m.log.Error("reconfiguration refused; the running configuration stays", "err", err)
		m.progress("reconfiguration refused:\n%v", err)
		return
	}
	m.progress("reconfigured: %s", cfg)
}

// reconfigure applies cfg while slaves stay attached and builds run on:
// the static slaves through Manager.Reconfigure, the latent slaves
// through Lifecycle.Reconfigure (a new one is added, a changed one takes
// its new settings at its next start, a removed one is stopped once its
// builds end, then forgotten), the builders and the schedulers replaced.
// The [master], [mail] and [cluster] tables cannot change without a
// restart: a change is logged, and the running ones stay; but on a master
// that has had no latent slave yet, the Lifecycle the first ones need is
// created with cfg's [master] settings (master_id, max_starting, ...),
// which no running part has used.
func (m *master) reconfigure(cfg *config.Config) error {
	old := m.config()
	if !reflect.DeepEqual(old.Raw.Master, cfg.Raw.Master) {
		m.log.Warn("[master] changed: it takes effect at the next start; the running values stay")
	}
	if !reflect.DeepEqual(old.Raw.Mail, cfg.Raw.Mail) {
		m.log.Warn("[mail] changed: it takes effect at the next start; the running notifier stays")
	}
	if !reflect.DeepEqual(old.Raw.Cluster, cfg.Raw.Cluster) {
		m.log.Warn("[cluster] changed: it takes effect at the next start; this master stays in the cluster it joined")
	}
	m.clusterLifecycle(cfg)
	drivers, built, err := m.latentDrivers(old, cfg)
	if err != nil {
		return err
	}
	switch lc := m.lifecycle(); {
	case lc != nil:
		err = lc.Reconfigure(drivers...)
	case len(drivers) > 0:
		if err = m.startLifecycle(cfg, drivers); err == nil {
			m.log.Info("first latent slaves: their Lifecycle starts with this file's [master] settings", "master_id", cfg.Lifecycle.MasterID)
		}
	}
	if err != nil {
		for _, d := range built {
			closeDriver(d)
		}
		return err
	}
	m.mu.Lock()
	m.drivers = append(m.drivers, built...)
	m.latents = make(map[string]latent.LatentSlave, len(drivers))
	for _, d := range drivers {
		m.latents[d.Slave().Name()] = d
	}
	m.mu.Unlock()
	if err := m.mgr.Reconfigure(cfg.Slaves...); err != nil {
		return err
	}
	m.runner.SetBuilders(cfg.Builders)
	m.scheds.Replace(cfg.Schedules)
	kept := *cfg
	kept.Raw.Master, kept.Raw.Mail, kept.Raw.Cluster, kept.Cluster = old.Raw.Master, old.Raw.Mail, old.Raw.Cluster, old.Cluster
	kept.Listen, kept.ListenMsgpack, kept.HTTP, kept.TLS, kept.TLSCert, kept.Basedir = old.Listen, old.ListenMsgpack, old.HTTP, old.TLS, old.TLSCert, old.Basedir
	m.mu.Lock()
	m.cfg = &kept
	m.mu.Unlock()
	return nil
}

// latentDrivers returns the drivers of cfg's latent slaves: the running
// one of each slave whose entry did not change, a new one for each that
// is new or changed (also returned as built). It refuses, before
// anything changes, what a reload cannot do: a static slave under the
// name of a latent slave that still has an instance.
func (m *master) latentDrivers(old, cfg *config.Config) (drivers, built []latent.LatentSlave, err error) {
	running := map[string]config.Latent{}
	for _, l := range old.Latents {
		running[l.Name] = l
	}
	m.mu.Lock()
	current := m.latents
	m.mu.Unlock()
	var errs []error
	for _, l := range cfg.Latents {
		if r, ok := running[l.Name]; ok && reflect.DeepEqual(r.Entry, l.Entry) && current[l.Name] != nil {
			drivers = append(drivers, current[l.Name])
			continue
		}
		d, err := l.Driver(m.driverEnv)
		if err != nil {
			errs = append(errs, fmt.Errorf("latent slave %s: %w", l.Name, err))
			continue
		}
		drivers = append(drivers, d)
		built = append(built, d)
	}
	lc := m.lifecycle()
	for _, s := range cfg.Slaves {
		if _, ok := running[s.Name()]; !ok || lc == nil {
			continue
		}
		if st, ok := lc.Status(s.Name()); ok && st.State != latent.Stopped && st.State != latent.Quarantined {
			errs = append(errs, fmt.Errorf("slave %s: it is a latent slave with an instance (%s): reload again once it has stopped", s.Name(), st.State))
		}
	}
	if err := errors.Join(errs...); err != nil {
		for _, d := range built {
			closeDriver(d)
		}
		return nil, nil, err
	}
	return drivers, built, nil
}
