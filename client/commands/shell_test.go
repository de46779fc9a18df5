//go:build unix

package commands

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestShellString(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "build")
	r, err := run(t, "shell", map[string]any{"workdir": dir,
		"command": "echo hello; echo oops >&2; printf partial; exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.stdout.String(); got != "hello\npartial\n" {
		t.Errorf("stdout %q", got)
	}
	if got := r.stderr.String(); got != "oops\n" {
		t.Errorf("stderr %q", got)
	}
	if rc := r.rc(t); rc != 3 {
		t.Errorf("rc %d, want 3", rc)
	}
	h := r.header.String()
	for _, want := range []string{"echo hello", " in dir " + dir, " argv: '", " using PTY: False\n", "elapsedTime="} {
		if !strings.Contains(h, want) {
			t.Errorf("header lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(h, "environment:") {
		t.Errorf("environment shown although logEnviron was not asked:\n%s", h)
	}
}

func TestShellListAndOptions(t *testing.T) {
	dir := t.TempDir()
	r, err := run(t, "shell", map[string]any{
		"workdir":       dir,
		"command":       []any{"sh", "-c", `cat; echo "$GREETING $PWD"; echo err >&2`, []any{"obfuscated", "secret", "XXX"}},
		"env":           map[string]any{"GREETING": []any{"a", "b"}, "HOME": nil},
		"want_stderr":   false,
		"initial_stdin": "from stdin\n",
		"timeout":       int8(60),
		"maxTime":       3600.0,
		"logEnviron":    true,
		"logfiles":      map[string]any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.stdout.String(), "from stdin\na:b "+dir+"\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if r.stderr.Len() != 0 {
		t.Errorf("stderr sent although want_stderr is false: %q", r.stderr.String())
	}
	h := r.header.String()
	for _, want := range []string{"'XXX'", "(timeout 60 secs) (maxTime 3600 secs)", " environment:\n", "  GREETING=a:b\n",
		" writing 11 bytes to stdin\n", " using PTY: False\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("header lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(h, "secret") || strings.Contains(h, "  HOME=") {
		t.Errorf("header shows a secret or a removed variable:\n%s", h)
	}
}

func TestShellCannotStart(t *testing.T) {
	r, err := run(t, "shell", map[string]any{"workdir": t.TempDir(), "command": []any{"no-such-program-here"}})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != -1 {
		t.Errorf("rc %d, want -1", rc)
	}
	if !strings.Contains(r.stderr.String(), "no-such-program-here") {
		t.Errorf("stderr %q", r.stderr.String())
	}
}

func TestShellNoOutputTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// the shell leaves a grandchild in its group; both must die
	r, err := run(t, "shell", map[string]any{"workdir": dir, "timeout": 0.2,
		"command": "sleep 60 & echo $! > child.pid; wait"})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != -1 {
		t.Errorf("rc %d, want -1", rc)
	}
	if h := r.header.String(); !strings.Contains(h, "command timed out: 0.2 seconds without output") ||
		!strings.Contains(h, "process killed by signal 9") {
		t.Errorf("header:\n%s", h)
	}
	assertDead(t, pidFile)
}

func TestShellInterruptWithSignal(t *testing.T) {
	dir := t.TempDir()
	c, err := New("shell", map[string]any{"workdir": dir, "interruptSignal": "TERM",
		"command": "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.01; done"})
	if err != nil {
		t.Fatal(err)
	}
	m := &readyMaster{fakeMaster: &fakeMaster{}, ready: make(chan struct{}), want: "ready"}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), m, Settings{BufferTimeout: time.Millisecond}) }()
	<-m.ready
	c.Interrupt("user asked")
	c.Interrupt("twice is harmless")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r := m.result(t)
	if rc := r.rc(t); rc != 7 {
		t.Errorf("rc %d, want the trap's 7", rc)
	}
	if !strings.Contains(r.stdout.String(), "got TERM") ||
		!strings.Contains(r.header.String(), "command interrupted (user asked), attempting to kill") {
		t.Errorf("stdout %q header %q", r.stdout.String(), r.header.String())
	}
}

func TestShellContextCancelKills(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, err := New("shell", map[string]any{"workdir": t.TempDir(), "command": "echo ready; sleep 60"})
	if err != nil {
		t.Fatal(err)
	}
	m := &readyMaster{fakeMaster: &fakeMaster{}, ready: make(chan struct{}), want: "ready"}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, m, Settings{BufferTimeout: time.Millisecond}) }()
	<-m.ready
	cancel()
	<-done
	if rc := m.result(t).rc(t); rc != -1 {
		t.Errorf("rc %d, want -1", rc)
	}
}

func TestShellLogfiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old.log"), []byte("before\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	r, err := run(t, "shell", map[string]any{"workdir": dir,
		"command": "echo one > new.log; echo two >> new.log; echo after >> old.log",
		"logfiles": map[string]any{"new": "new.log", "old": map[string]any{"filename": "old.log", "follow": true},
			"never": "never.log"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.logs["new"]; got == nil || got.String() != "one\ntwo\n" {
		t.Errorf("log new = %v", got)
	}
	if got := r.logs["old"]; got == nil || got.String() != "after\n" {
		t.Errorf("log old (follow) = %v", got)
	}
	if r.logs["never"] != nil {
		t.Errorf("log never = %q", r.logs["never"].String())
	}
}

func TestShellBadArgs(t *testing.T) {
	for _, args := range []map[string]any{
		{"workdir": "/tmp"},
		{"workdir": "/tmp", "command": 5},
		{"workdir": "/tmp", "command": "true", "env": map[string]any{"X": 1}},
		{"workdir": "/tmp", "command": "true", "interruptSignal": "NOPE"},
		{"workdir": "/tmp", "command": "true", "timeout": "soon"},
	} {
		if _, err := New("shell", args); err == nil {
			t.Errorf("New accepted %v", args)
		}
	}
}

// readyMaster closes ready once stdout contains want.
type readyMaster struct {
	*fakeMaster
	ready chan struct{}
	once  sync.Once
	want  string
	seen  strings.Builder
}

func (m *readyMaster) Update(ctx context.Context, pairs [][2]any) error {
	err := m.fakeMaster.Update(ctx, pairs)
	for _, kv := range pairs {
		if kv[0] == "stdout" {
			m.seen.WriteString(kv[1].([]any)[0].(string))
			if strings.Contains(m.seen.String(), m.want) {
				m.once.Do(func() { close(m.ready) })
			}
		}
	}
	return err
}
