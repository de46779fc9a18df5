package protocol

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/buildslave/buildslave/protocol/internal/capture"
	"github.com/buildslave/buildslave/protocol/wire"
)

// lockedTransport lets a test write raw frames next to a wire.Conn.
type lockedTransport struct {
	wire.Transport
	mu sync.Mutex
}

func (t *lockedTransport) WriteMessage(p []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.Transport.WriteMessage(p)
}

// fakeSlave is a minimal slave built on wire: it answers the attach
// sequence and runs fake commands.
//
//   - shell "echo TEXT" prints TEXT; "fail" completes with a failure;
//     "wait" runs until interrupted, then exits with rc -1.
//   - upload_file sends files[path] in blocks; download_file stores what it
//     reads into files[path].
type fakeSlave struct {
	t   testing.TB
	tr  *lockedTransport
	w   *wire.Conn
	wg  sync.WaitGroup
	ctx context.Context

	events chan string // every op recorded, as it happens
	stall  string

	mu         sync.Mutex
	ops        []string
	files      map[string][]byte
	interrupts map[string]chan struct{}
	mkdirs     []any
}

func newFakeSlave(t testing.TB, tr wire.Transport) *fakeSlave {
	return newStallingSlave(t, tr, "")
}

// newStallingSlave is a fakeSlave that never answers requests with op
// stall: its reader waits until the connection ends.
func newStallingSlave(t testing.TB, tr wire.Transport, stall string) *fakeSlave {
	s := &fakeSlave{
		stall:      stall,
		t:          t,
		tr:         &lockedTransport{Transport: tr},
		files:      map[string][]byte{},
		interrupts: map[string]chan struct{}{},
		events:     make(chan string, 100),
	}
	s.w = wire.NewConn(s.tr, s.handle)
	s.ctx = s.w.Context()
	s.wg.Go(func() { s.w.Serve() })
	t.Cleanup(func() { s.w.Close(); s.wg.Wait() })
	return s
}

func (s *fakeSlave) record(op string) {
	s.mu.Lock()
	s.ops = append(s.ops, op)
	s.mu.Unlock()
	select {
	case s.events <- op:
	default:
	}
}

func (s *fakeSlave) opsSeen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ops)
}

func (s *fakeSlave) handle(ctx context.Context, req wire.Message) (any, error) {
	op := req.Op()
	if op == s.stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	switch op {
	case "print", "keepalive", "shutdown":
		s.record(op)
		return nil, nil
	case "get_worker_info":
		s.record(op)
		return capture.WorkerInfo(), nil
	case "set_worker_settings":
		s.record(op)
		args, err := req.Map("args")
		if err != nil {
			return nil, err
		}
		if keys := slices.Sorted(maps.Keys(args)); !slices.Equal(keys, []string{"buffer_size", "buffer_timeout", "max_line_length", "newline_re"}) {
			return nil, fmt.Errorf("settings %v", keys)
		}
		return nil, nil
	case "start_command":
		id, _ := req.String("command_id")
		name, _ := req.String("command_name")
		args, err := req.Map("args")
		if err != nil {
			return nil, err
		}
		s.record("start_command " + name)
		intr := make(chan struct{})
		s.mu.Lock()
		s.interrupts[id] = intr
		s.mu.Unlock()
		s.wg.Go(func() { s.run(id, name, args, intr) })
		return nil, nil
	case "interrupt_command":
		id, _ := req.String("command_id")
		s.record(op)
		s.mu.Lock()
		intr := s.interrupts[id]
		delete(s.interrupts, id)
		s.mu.Unlock()
		if intr == nil {
			return nil, fmt.Errorf("no command %s", id)
		}
		close(intr)
		return nil, nil
	}
	return nil, wire.UnknownOp(op)
}

// call sends a request about command id to the master.
func (s *fakeSlave) call(id, op string, fields map[string]any) (any, error) {
	if fields == nil {
		fields = map[string]any{}
	}
	fields["command_id"] = id
	return s.w.Call(s.ctx, op, fields)
}

func (s *fakeSlave) update(id string, pairs ...[]any) {
	l := make([]any, len(pairs))
	for i, p := range pairs {
		l[i] = p
	}
	s.call(id, "update", map[string]any{"args": l})
}

func (s *fakeSlave) run(id, name string, args map[string]any, intr chan struct{}) {
	rc, failure := 0, any(nil)
	switch name {
	case "listdir":
		s.update(id, []any{"files", []any{"buildbot.tac", "info", "b1"}})
	case "mkdir":
		s.mu.Lock()
		s.mkdirs, _ = args["paths"].([]any)
		s.mu.Unlock()
	case "shell":
		cmd, _ := args["command"].(string)
		switch {
		case strings.HasPrefix(cmd, "echo "):
			out := strings.TrimPrefix(cmd, "echo ") + "\n"
			s.update(id, []any{"header", []any{cmd + "\n", []any{len(cmd)}, []any{1.0}}},
				[]any{"stdout", []any{out, []any{len(out) - 1}, []any{1.0}}})
		case cmd == "fail":
			failure = "boom"
		case cmd == "wait":
			select {
			case <-intr:
				rc = -1
			case <-s.ctx.Done():
				return
			}
		}
	case "upload_file":
		path, _ := args["path"].(string)
		s.mu.Lock()
		data := s.files[path]
		s.mu.Unlock()
		for len(data) > 0 {
			n := min(len(data), 4)
			if _, err := s.call(id, "update_upload_file_write", map[string]any{"args": data[:n]}); err != nil {
				rc, failure = 1, err.Error()
				break
			}
			data = data[n:]
		}
		if failure == nil {
			s.call(id, "update_upload_file_utime", map[string]any{"access_time": 1.5e9, "modified_time": 1.6e9})
			s.call(id, "update_upload_file_close", nil)
		}
	case "download_file":
		path, _ := args["path"].(string)
		var got []byte
		for {
			res, err := s.call(id, "update_read_file", map[string]any{"length": 5})
			b, _ := res.([]byte)
			if err != nil || len(b) == 0 {
				break
			}
			got = append(got, b...)
		}
		s.call(id, "update_read_file_close", nil)
		s.mu.Lock()
		s.files[path] = got
		s.mu.Unlock()
	}
	s.update(id, []any{"rc", rc}, []any{"elapsed", 0.01})
	s.call(id, "complete", map[string]any{"args": failure})
}
