package main

import (
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/buildslave/buildslave/examples/master/internal/config"
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
// the static slaves through Manager.Reconfigure, the builders and the
// schedulers replaced. Latent slaves and the [master] and [mail] tables
// cannot change without a restart: a change is logged, and the running
// ones stay.
func (m *master) reconfigure(cfg *config.Config) error {
	old := m.config()
	if !reflect.DeepEqual(old.Raw.Master, cfg.Raw.Master) {
		m.log.Warn("[master] changed: it takes effect at the next start; the running values stay")
	}
	if !reflect.DeepEqual(old.Raw.Mail, cfg.Raw.Mail) {
		m.log.Warn("[mail] changed: it takes effect at the next start; the running notifier stays")
	}
	running := map[string]config.Latent{}
	for _, l := range old.Latents {
		running[l.Name] = l
	}
	for _, l := range cfg.Latents {
		r, ok := running[l.Name]
		switch {
		case !ok:
			m.log.Warn("new latent slave: latent slaves cannot be added by a reconfiguration; restart the master to add it", "slave", l.Name)
		case !reflect.DeepEqual(r.Entry, l.Entry):
			m.log.Warn("latent slave changed: latent slaves cannot be changed by a reconfiguration; the running one stays until a restart", "slave", l.Name)
		}
	}
	for name := range running {
		if !slices.ContainsFunc(cfg.Latents, func(l config.Latent) bool { return l.Name == name }) {
			m.log.Warn("latent slave removed: latent slaves cannot be removed by a reconfiguration; it stays until a restart", "slave", name)
		}
	}

	slaves := slices.Clone(cfg.Slaves)
	known := map[string]bool{}
	for _, s := range cfg.Slaves {
		known[s.Name()] = true
	}
	for _, d := range m.drivers {
		slaves = append(slaves, d.Slave())
		known[d.Slave().Name()] = true
	}
	var errs []error
	for _, b := range cfg.Builders {
		for _, s := range b.Slaves {
			if !known[s] {
				errs = append(errs, fmt.Errorf("builder %s: slave %s is a latent slave this master did not start with; restart the master to add it", b.Name, s))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := m.mgr.Reconfigure(slaves...); err != nil {
		return err
	}
	m.runner.SetBuilders(cfg.Builders)
	m.scheds.Replace(cfg.Schedules)
	kept := *cfg
	kept.Raw.Master, kept.Raw.Mail, kept.Latents = old.Raw.Master, old.Raw.Mail, old.Latents
	kept.Listen, kept.ListenMsgpack, kept.HTTP, kept.TLS, kept.TLSCert, kept.Basedir = old.Listen, old.ListenMsgpack, old.HTTP, old.TLS, old.TLSCert, old.Basedir
	m.mu.Lock()
	m.cfg = &kept
	m.mu.Unlock()
	return nil
}
