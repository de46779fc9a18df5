package slave

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
)

// pipeConn is the smallest Conn: it answers everything and ends on Close.
type pipeConn struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newPipeConn() *pipeConn {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &pipeConn{ctx, cancel}
}

func (c *pipeConn) Context() context.Context              { return c.ctx }
func (c *pipeConn) Keepalive(context.Context) error       { return nil }
func (c *pipeConn) Print(context.Context, string) error   { return nil }
func (c *pipeConn) RequestShutdown(context.Context) error { return nil }
func (c *pipeConn) Close() error                          { c.cancel(errors.New("closed")); return nil }
func (c *pipeConn) Info() Info                            { return Info{} }
func (c *pipeConn) RemoteAddr() string                    { return "127.0.0.1:1" }

// TestDetachOnlyRemovesItsOwnRegistration calls the cleanup of a replaced
// attachment after its successor registered, in whatever order the
// goroutines of a real transport would run it (Buildbot issue 4678).
func TestDetachOnlyRemovesItsOwnRegistration(t *testing.T) {
	s, err := New("bot", "pw")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first := newPipeConn()
	if err := m.Attach(context.Background(), "bot", first); err != nil {
		t.Fatal(err)
	}
	old := m.slaves["bot"].att
	m.detach(old, errors.New("lost"))
	second := newPipeConn()
	if err := m.Attach(context.Background(), "bot", second); err != nil {
		t.Fatal(err)
	}
	m.detach(old, errors.New("late cleanup of the first connection"))
	if st, _ := m.State("bot"); !st.Attached {
		t.Fatal("late cleanup of the first connection unregistered the second")
	}
	if second.ctx.Err() != nil {
		t.Fatal("late cleanup closed the second connection")
	}
}
