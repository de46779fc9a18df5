package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/buildslave/buildslave/examples/master/internal/termsafe"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// bannerSlaves is how many static slots the banner explains one by one;
// it counts the rest in one line, so a master of thousands starts quietly.
const bannerSlaves = 3

// banner says where to look and how to attach a slave to the static slots.
func (m *master) banner() {
	cfg := m.config()
	web := "no authentication"
	if cfg.Web.Authenticated() {
		web = "credentials required"
	}
	if m.webBound != m.webAddr {
		web = "listening on " + m.webBound + " (every interface), " + web
	}
	m.progress("status page: http://%s/  (%s; JSON: /api/status, metrics: /metrics, force: POST %s?builder=NAME)", m.webAddr, web, forcePath)
	m.progress("slaves attach over Perspective Broker (every Buildbot slave's default) to %s, over msgpack to %s://%s/ (%s)", m.pbAddr, m.scheme(), m.protoAddr, cfg.File)
	for _, s := range cfg.Raw.Slaves[:min(len(cfg.Raw.Slaves), bannerSlaves)] {
		// The embedded default's password is public; a real one is never shown.
		pw := "$PASSWORD"
		if cfg.File == defaultName {
			pw = s.Password
		}
		dir := filepath.Join(cfg.Basedir, "workers", s.Name)
		var b strings.Builder
		fmt.Fprintf(&b, "static slave %q waits for a slave; attach a stock one with\n", s.Name)
		fmt.Fprintf(&b, "      buildbot-worker create-worker %s %s %s '%s' && buildbot-worker start %s\n", dir, m.pbAddr, s.Name, pw, dir)
		fmt.Fprintf(&b, "    or our Go slave with\n")
		fmt.Fprintf(&b, "      BUILDSLAVE_PASSWORD='%s' go run ./examples/slave -master %s -name %s -basedir %s", pw, m.pbAddr, s.Name, dir)
		m.progress("%s", b.String())
	}
	if n := len(cfg.Raw.Slaves) - bannerSlaves; n > 0 {
		m.progress("%d more static slaves wait for slaves: attach them the same way", n)
	}
	for i, l := range cfg.Latents {
		if i == bannerSlaves {
			m.progress("%d more latent slaves start when builds want them", len(cfg.Latents)-i)
			break
		}
		m.progress("latent slave %q (%s) starts when a build wants it", l.Name, l.Entry.Kind)
	}
}

// latentProgress prints a latent slave's state change.
func (m *master) latentProgress(ev latent.Event) {
	what := map[latent.State]string{
		latent.Substantiating: "substantiating",
		latent.Idle:           "attached, idle",
		latent.Running:        "running a build",
		latent.Stopping:       "stopping",
		latent.Stopped:        "stopped",
		latent.Quarantined:    "quarantined",
	}[ev.To]
	switch {
	case ev.Reaped:
		m.progress("latent slave %s: reaped instance %s left behind by an earlier master", ev.Slave, ev.Instance)
		return
	case ev.From == latent.Running && ev.To == latent.Idle:
		what = "idle"
	}
	line := fmt.Sprintf("latent slave %s: %s", ev.Slave, what)
	if ev.Instance != "" {
		line += " (instance " + ev.Instance + ")"
	}
	if ev.Reason != "" {
		line += ": " + termsafe.Line(ev.Reason)
	}
	m.progress("%s", line)
}

// slaveProgress prints attaches and detaches until the subscription ends.
func (m *master) slaveProgress(events <-chan slave.Event) {
	for ev := range events {
		switch ev.Kind {
		case slave.Attached:
			st, _ := m.mgr.State(ev.Slave)
			m.progress("slave %s attached from %s (%s)", ev.Slave, st.RemoteAddr, termsafe.Line(st.Info.Version))
		case slave.Detached:
			m.progress("slave %s detached: %s", ev.Slave, termsafe.Line(fmt.Sprint(ev.Err)))
		case slave.Missing:
			m.progress("slave %s is missing", ev.Slave)
		}
	}
}
