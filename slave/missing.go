package slave

import (
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

// fireMissing marks e missing and sends one notice for this loss event.
func (m *Manager) fireMissing(e *entry, gen int) {
	m.mu.Lock()
	if gen != e.missingGen || e.att != nil || m.closed || m.slaves[e.cfg.name] != e {
		m.mu.Unlock()
		return
	}
	e.missing = true
	e.missingTimer = nil
	now := time.Now()
	report := e.report()
	report.Detected = now
	m.emit(Event{Kind: Missing, Slave: e.cfg.name, Time: now})
	if len(report.Recipients) > 0 {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.notifier.SlaveMissing(m.ctx, report) // it logs its own failures
		}()
	}
	m.mu.Unlock()
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
