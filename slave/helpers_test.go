package slave_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
)

// logBuffer collects log lines from a manager.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(l.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// matching returns the lines that contain every one of subs.
func (l *logBuffer) matching(subs ...string) []string {
	var out []string
	for _, line := range l.lines() {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// recorder is a Notifier that remembers what it was told.
type recorder struct {
	mu  sync.Mutex
	got []notify.Missing
}

func (r *recorder) SlaveMissing(_ context.Context, m notify.Missing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return nil
}

func (r *recorder) all() []notify.Missing {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notify.Missing(nil), r.got...)
}

// fixture is a manager with a log buffer and a recording notifier.
type fixture struct {
	m    *slave.Manager
	log  *logBuffer
	sent *recorder
}

func newFixture(t *testing.T, cfg slave.Config, slaves ...*slave.Slave) *fixture {
	t.Helper()
	f := &fixture{log: &logBuffer{}, sent: &recorder{}}
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
