package latent_test

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/internal/leakcheck"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
	"github.com/buildslave/buildslave/slave"
)

const masterID = "master-1"

// spec is one latent slave of a fixture.
type spec struct {
	s    *slave.Slave
	wait time.Duration // build_wait_timeout
	boot latenttest.Boot
	// plain hides every optional interface of the fake but Lister: a
	// driver with only LatentSlave's methods, such as a user writes.
	plain bool
}

// plainDriver is a LatentSlave and nothing more (Lister aside, so that
// the reaper sees its instances): no BuildWaiter, no PasswordPasser, no
// Checker.
type plainDriver struct{ f *latenttest.Fake }

func (d plainDriver) Slave() *slave.Slave { return d.f.Slave() }
func (d plainDriver) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	return d.f.Start(ctx, req)
}
func (d plainDriver) Stop(ctx context.Context, inst latent.Instance) error {
	return d.f.Stop(ctx, inst)
}
func (d plainDriver) List(ctx context.Context, masterID string) ([]latent.Instance, error) {
	return d.f.List(ctx, masterID)
}

// fixture is a manager, a fake cloud and a Lifecycle over them.
type fixture struct {
	m     *slave.Manager
	cloud *latenttest.Cloud
	fakes map[string]*latenttest.Fake
	lc    *latent.Lifecycle
	log   *testlog.Buffer
	sent  *notifytest.Recorder
	t0    time.Time
	// before are the goroutines that ran before the fixture.
	before leakcheck.Snapshot
}

// newFixture builds the fixture; plant runs before the Lifecycle starts.
// The manager and the Lifecycle log to f.log unless cfg.Logger is set.
func newFixture(t testing.TB, cfg latent.Config, plant func(*latenttest.Cloud), specs ...spec) *fixture {
	t.Helper()
	before := leakcheck.Take()
	f := &fixture{log: &testlog.Buffer{}, sent: &notifytest.Recorder{}, fakes: make(map[string]*latenttest.Fake), t0: time.Now(), before: before}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var slaves []*slave.Slave
	for _, sp := range specs {
		slaves = append(slaves, sp.s)
	}
	m, err := slave.NewManager(slave.Config{Logger: logger, Notifier: &notifytest.Recorder{}}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	f.cloud = latenttest.NewCloud(t, m)
	var latents []latent.LatentSlave
	for _, sp := range specs {
		fk := f.cloud.Slave(sp.s, sp.wait, sp.boot)
		f.fakes[sp.s.Name()] = fk
		if sp.plain {
			latents = append(latents, plainDriver{fk})
		} else {
			latents = append(latents, fk)
		}
	}
	if plant != nil {
		plant(f.cloud)
	}
	if cfg.MasterID == "" {
		cfg.MasterID = masterID
	}
	cfg.Logger = logger
	if cfg.Notifier == nil {
		cfg.Notifier = &notify.Retrying{Notifier: f.sent, Logger: logger}
	}
	f.lc, err = latent.New(m, cfg, latents...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.lc.Close()
		if t, ok := t.(*testing.T); ok { // in a synctest bubble
			noLatentGoroutines(t, before)
		}
		m.Close()
	})
	return f
}

// noLatentGoroutines fails t if a goroutine running code of package
// latent has started since before and is still there once the bubble's
// goroutines are blocked: Close and Shutdown must leave none behind. The
// goroutines of the test doubles (latenttest) and of the manager are left
// to their owners.
func noLatentGoroutines(t *testing.T, before leakcheck.Snapshot) {
	t.Helper()
	synctest.Wait()
	before.Verify(t, leakcheck.Matching("buildslave/latent."))
}

func mustSlave(t testing.TB, name string, opts ...slave.Option) *slave.Slave {
	t.Helper()
	s, err := slave.New(name, "configured-"+name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// elapsed is the time since the fixture was built.
func (f *fixture) elapsed() time.Duration { return time.Since(f.t0) }

func (f *fixture) status(t *testing.T, name string) latent.Status {
	t.Helper()
	st, ok := f.lc.Status(name)
	if !ok {
		t.Fatalf("no status for %q", name)
	}
	return st
}

// wantState checks name's state once the bubble's goroutines are blocked.
func (f *fixture) wantState(t *testing.T, name string, want latent.State) latent.Status {
	t.Helper()
	synctest.Wait()
	st := f.status(t, name)
	if st.State != want {
		t.Fatalf("at %v %s is %s (%s), want %s\n%s", f.elapsed(), name, st.State, st.Reason, want, f.log)
	}
	return st
}

// ops returns the ledger's records of op ("start" or "stop") as offsets
// from the fixture's start.
func (f *fixture) ops(op string) []time.Duration {
	var out []time.Duration
	for _, r := range f.cloud.Ledger() {
		if r.Op == op {
			out = append(out, r.Time.Sub(f.t0))
		}
	}
	return out
}

// build holds a slot from Acquire; done is closed when Acquire returned.
type build struct {
	b    *slave.Build
	err  error
	at   time.Duration
	done chan struct{}
}

// acquire starts an Acquire of name in a goroutine.
func (f *fixture) acquire(ctx context.Context, name string) *build {
	b := &build{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.b, b.err = f.m.Acquire(ctx, name)
		b.at = f.elapsed()
	}()
	return b
}
