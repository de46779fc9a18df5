package protocol

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/protocol/remote"

	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// pipeMaster is a Handler and manager for slaves s1 and s2 inside a
// synctest bubble, fed through in-memory pipes.
type pipeMaster struct {
	h    *Handler
	m    *slave.Manager
	logs *testlog.Buffer
	wg   sync.WaitGroup
}

func newPipeMaster(t *testing.T) *pipeMaster {
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	s1, _ := slave.New("s1", "pw")
	s2, _ := slave.New("s2", "pw")
	m, err := slave.NewManager(slave.Config{Logger: log}, s1, s2)
	if err != nil {
		t.Fatal(err)
	}
	pm := &pipeMaster{h: &Handler{Manager: m, Logger: log}, m: m, logs: logs}
	t.Cleanup(func() { m.Close(); pm.wg.Wait() })
	return pm
}

// connect starts serving a connection of the named slave and returns the
// slave's end of the pipe and the master's Conn.
func (pm *pipeMaster) connect(name string) (wire.Transport, *Conn) {
	master, peer := wire.Pipe()
	c := newConn(pm.h, name, master)
	pm.wg.Add(1)
	c.serve(pm.wg.Done)
	return peer, c
}

func TestSilentPeerIsDroppedAndDoesNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pm := newPipeMaster(t)
		start := time.Now()
		_, silent := pm.connect("s1") // upgrades, then never answers
		peer, _ := pm.connect("s2")
		newFakeSlave(t, peer)
		b, err := pm.m.Acquire(t.Context(), "s2")
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("s2 attached after %v, behind the silent s1", d)
		}
		b.Release()
		<-silent.Context().Done()
		if d := time.Since(start); d != DefaultStepTimeout {
			t.Errorf("silent slave dropped after %v, want %v", d, DefaultStepTimeout)
		}
		synctest.Wait()
		lines := pm.logs.Matching("s1")
		if len(lines) != 1 || !strings.Contains(lines[0], "attach failed") || !strings.Contains(lines[0], `print \"attached\": no answer within 10s`) {
			t.Errorf("log lines about s1: %q", lines)
		}
	})
}

// TestAttachesBeyondMaxAttachingWaitTheirTurn: with MaxAttaching 1, a
// second slave waits, holding no goroutine, until the first one's attach
// is over (here: dropped for silence), and its own deadlines start with
// its turn.
func TestAttachesBeyondMaxAttachingWaitTheirTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pm := newPipeMaster(t)
		pm.h.MaxAttaching = 1
		start := time.Now()
		g0 := runtime.NumGoroutine()
		_, silent := pm.connect("s1")
		peer, _ := pm.connect("s2")
		synctest.Wait()
		if n := runtime.NumGoroutine() - g0; n != 1 {
			t.Errorf("two slaves attaching, one at a time, take %d goroutines", n)
		}
		newFakeSlave(t, peer)
		b, err := pm.m.Acquire(t.Context(), "s2")
		if err != nil {
			t.Fatal(err)
		}
		b.Release()
		if d := time.Since(start); d != DefaultStepTimeout {
			t.Errorf("s2 attached after %v, want after s1 was dropped (%v)", d, DefaultStepTimeout)
		}
		if err := silent.Context().Err(); err == nil {
			t.Error("s1 still connected")
		}
	})
}

// TestStepDeadlines has a slave stop answering at each step of the attach
// sequence.
func TestStepDeadlines(t *testing.T) {
	for _, step := range []string{"get_worker_info", "set_worker_settings", "start_command"} {
		t.Run(step, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pm := newPipeMaster(t)
				pm.h.Builders = []string{"b1"}
				pm.h.StepTimeout = 3 * time.Second
				peer, c := pm.connect("s1")
				newStallingSlave(t, peer, step)
				start := time.Now()
				<-c.Context().Done()
				if d := time.Since(start); d != 3*time.Second {
					t.Errorf("dropped after %v", d)
				}
				if cause := context.Cause(c.Context()); !strings.Contains(cause.Error(), "no answer within 3s") {
					t.Errorf("cause %v", cause)
				}
			})
		})
	}
}

func TestAttachTimeoutBoundsTheWholeSequence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pm := newPipeMaster(t)
		pm.h.AttachTimeout = 2 * time.Second
		_, c := pm.connect("s1")
		<-c.Context().Done()
		if cause := context.Cause(c.Context()); !strings.Contains(cause.Error(), "attach sequence took longer than 2s") {
			t.Errorf("cause %v", cause)
		}
	})
}

func TestConnectionLossFailsRunningCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pm := newPipeMaster(t)
		peer, _ := pm.connect("s1")
		newFakeSlave(t, peer)
		b, err := pm.m.Acquire(t.Context(), "s1")
		if err != nil {
			t.Fatal(err)
		}
		defer b.Release()
		c := b.Conn().(*Conn)
		cmd, err := c.Start(t.Context(), remote.Request{Name: "shell", Args: map[string]any{"command": "wait"}})
		if err != nil {
			t.Fatal(err)
		}
		peer.Close()
		for range cmd.Updates() {
		}
		if err := cmd.Wait(t.Context()); err == nil || !strings.Contains(err.Error(), "connection lost") {
			t.Errorf("Wait = %v", err)
		}
		if _, err := c.Start(t.Context(), remote.Request{Name: "shell"}); err == nil {
			t.Error("Start on a lost connection succeeded")
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := cmd.Wait(ctx); err == nil {
			t.Error("Wait")
		}
		synctest.Wait()
		if !errors.Is(context.Cause(b.Context()), slave.ErrSlaveLost) {
			t.Errorf("build's cause %v", context.Cause(b.Context()))
		}
	})
}
