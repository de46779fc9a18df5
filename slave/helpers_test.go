package slave_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
	"github.com/buildslave/buildslave/slave"
)

// fixture is a manager with a log buffer and a recording notifier.
type fixture struct {
	m    *slave.Manager
	log  *testlog.Buffer
	sent *notifytest.Recorder
}

func newFixture(t *testing.T, cfg slave.Config, slaves ...*slave.Slave) *fixture {
	t.Helper()
	f := &fixture{log: &testlog.Buffer{}, sent: &notifytest.Recorder{}}
	cfg.Logger = slog.New(slog.NewTextHandler(f.log, nil))
	if cfg.Notifier == nil {
		cfg.Notifier = f.sent
	}
	m, err := slave.NewManager(cfg, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	f.m = m
	return f
}

func mustNew(t testing.TB, name, password string, opts ...slave.Option) *slave.Slave {
	t.Helper()
	s, err := slave.New(name, password, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func state(t *testing.T, m *slave.Manager, name string) slave.State {
	t.Helper()
	s, ok := m.State(name)
	if !ok {
		t.Fatalf("no state for %q", name)
	}
	return s
}

// notifierFunc adapts a function to notify.Notifier.
type notifierFunc func(ctx context.Context) error

func (f notifierFunc) SlaveMissing(ctx context.Context, _ notify.Missing) error { return f(ctx) }
