package slave

import (
	"context"
	"time"

	"github.com/buildslave/buildslave/notify"
)

// armMissing (re)starts e's missing timer: it fires once, missing_timeout
// after now, unless the slave attaches first. m.mu is held.
func (m *Manager) armMissing(e *entry) {
	m.disarmMissing(e)
	if m.closed || e.controlled {
		return
	}
	gen := e.missingGen
	e.missingTimer = time.AfterFunc(e.cfg.missingTimeout, func() { m.fireMissing(e, gen) })
}

// disarmMissing cancels e's missing timer; m.mu is held.
func (m *Manager) disarmMissing(e *entry) {
	e.missingGen++
	if e.missingTimer != nil {
		e.missingTimer.Stop()
		e.missingTimer = nil
	}
}

// stillMissing reports whether e's missing timer of generation gen is
// still due: e did not attach and was not dropped since; m.mu is held.
func (m *Manager) stillMissing(e *entry, gen int) bool {
	return gen == e.missingGen && e.att == nil && !m.closed && m.slaves[e.cfg.name] == e
}

// fireMissing marks e missing and sends one notice for this loss event.
// With a Gate, only if the Gate says so: the slave may have attached to
// another master, or another master sent the notice already.
func (m *Manager) fireMissing(e *entry, gen int) {
	m.mu.Lock()
	if !m.stillMissing(e, gen) {
		m.mu.Unlock()
		return
	}
	e.missingTimer = nil
	if m.cfg.Gate == nil {
		report := m.markMissing(e)
		if len(report.Recipients) > 0 {
			m.wg.Go(func() {
				m.notifier.SlaveMissing(m.ctx, report) // it logs its own failures
			})
		}
		m.mu.Unlock()
		m.logMissing(report)
		return
	}
	defer m.mu.Unlock()
	notice := MissingNotice{Missing: e.report(), Due: time.Now()}
	m.wg.Go(func() {
		err := m.cfg.Gate.SendMissing(m.ctx, notice, func(ctx context.Context) error {
			m.mu.Lock()
			if !m.stillMissing(e, gen) {
				m.mu.Unlock()
				return nil
			}
			report := m.markMissing(e)
			m.mu.Unlock()
			m.logMissing(report)
			if len(report.Recipients) == 0 {
				return nil
			}
			return m.notifier.SlaveMissing(ctx, report)
		})
		if err != nil {
			m.log.Warn("slave gate: the missing notice of a slave not sent from here", "slave", e.name, "reason", err.Error())
		}
	})
}

// markMissing marks e missing and returns its notice; m.mu is held.
func (m *Manager) markMissing(e *entry) notify.Missing {
	e.missing = true
	report := e.report()
	report.Detected = time.Now()
	m.emit(Event{Kind: Missing, Slave: e.cfg.name, Time: report.Detected})
	return report
}

func (m *Manager) logMissing(report notify.Missing) {
	m.log.Warn("slave missing", "slave", report.Slave, "last_connected", report.LastConnected, "notify", len(report.Recipients))
}

// report is e's missing notice, but for its Detected time; m.mu is held
// and e is detached.
func (e *entry) report() notify.Missing {
	return notify.Missing{
		Slave:         e.cfg.name,
		Recipients:    e.cfg.NotifyOnMissing(),
		LastConnected: e.since,
		Admin:         e.info.Admin,
		Host:          e.info.Host,
	}
}
