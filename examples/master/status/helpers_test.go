package status_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
)

// quiet drops log lines.
var quiet = slog.New(slog.DiscardHandler)

// hostile is what a malicious slave reports about itself.
var hostile = slave.Info{
	Admin:   `<script>alert("admin")</script>`,
	Host:    `<img src=x onerror=alert(1)>`,
	OS:      `"><b>os</b>`,
	Version: "3.7.0",
	NumCPUs: 4,
}

// recorder is a Notifier that fails with the errors it is given, in
// order, then succeeds.
type recorder struct {
	mu    sync.Mutex
	fail  []error
	calls int
}

func (r *recorder) SlaveMissing(context.Context, notify.Missing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if len(r.fail) == 0 {
		return nil
	}
	err := r.fail[0]
	r.fail = r.fail[1:]
	return err
}

// fakeBuilds is the master's record of builds.
type fakeBuilds struct {
	mu     sync.Mutex
	builds []status.Build // oldest first
}

func (f *fakeBuilds) Recent(n int) []status.Build { return f.Before(0, n) }

// Before is Recent from build id down; id 0 means from the newest.
func (f *fakeBuilds) Before(id, n int) []status.Build {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]status.Build, 0, min(n, len(f.builds)))
	for _, b := range slices.Backward(f.builds) {
		if len(out) == n {
			break
		}
		if id > 0 && b.ID >= id {
			continue
		}
		b.Steps = slices.Clone(b.Steps)
		out = append(out, b)
	}
	return out
}

// put adds b, or replaces the build with its ID.
func (f *fakeBuilds) put(b status.Build) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := slices.IndexFunc(f.builds, func(o status.Build) bool { return o.ID == b.ID }); i >= 0 {
		f.builds[i] = b
		return
	}
	f.builds = append(f.builds, b)
}

// fixture is a master's worth of status: three slaves, one latent slave
// on a fake cloud, builds and the Status over them.
type fixture struct {
	m       *slave.Manager
	cloud   *latenttest.Cloud
	local   *latenttest.Fake
	lc      *latent.Lifecycle
	builds  *fakeBuilds
	reg     *prometheus.Registry
	metrics *status.Metrics
	st      *status.Status
}

const masterID = "status-test"

// newFixture wires the Status as the example master does: the metrics
// first, so that the manager's notifier and the Lifecycle's Observe feed
// them, then the Status over the manager and the Lifecycle. notifier is
// the manager's, before counting.
func newFixture(t testing.TB, boot latenttest.Boot, notifier notify.Notifier) *fixture {
	t.Helper()
	f := &fixture{builds: &fakeBuilds{}, reg: prometheus.NewRegistry()}
	f.metrics = status.NewMetrics(f.reg)
	linux := mustSlave(t, "bot-linux", slave.MaxBuilds(2), slave.Properties(map[string]any{"os": "linux", "arch": "amd64"}))
	evil := mustSlave(t, "bot-evil")
	solaris := mustSlave(t, "bot-solaris", slave.MissingTimeout(time.Hour), slave.NotifyOnMissing("admin@example.org"))
	local := mustSlave(t, "local1", slave.MaxBuilds(1))
	var err error
	f.m, err = slave.NewManager(slave.Config{Logger: quiet, Notifier: f.metrics.Notifier(notifier, quiet)}, linux, evil, solaris, local)
	if err != nil {
		t.Fatal(err)
	}
	f.cloud = latenttest.NewCloud(t, f.m)
	f.local = f.cloud.Slave(local, time.Minute, boot)
	f.lc, err = latent.New(f.m, latent.Config{MasterID: masterID, Logger: quiet, ReapInterval: -1, Observe: f.metrics.ObserveLatent}, f.local)
	if err != nil {
		t.Fatal(err)
	}
	f.st = status.New(status.Config{
		Manager:   f.m,
		Lifecycle: f.lifecycle,
		Builds:    f.builds,
		Builders:  func() []string { return []string{"hello", `"><script>alert(2)</script>`} },
		ForcePath: "/force",
		FormToken: func() string { return "page-token" },
		LatentKind: func(name string) string {
			if name == "local1" {
				return "ec2"
			}
			return ""
		},
		Metrics: f.metrics,
		Logger:  quiet,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.lc.Shutdown(ctx); err != nil {
			t.Errorf("latent shutdown: %v", err)
		}
		f.m.Close()
		f.st.Close()
	})
	return f
}

// lifecycle is the fixture's Lifecycle, as status.Config.Lifecycle.
func (f *fixture) lifecycle() *latent.Lifecycle { return f.lc }

func mustSlave(t testing.TB, name string, opts ...slave.Option) *slave.Slave {
	t.Helper()
	s, err := slave.New(name, "pw-"+name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
