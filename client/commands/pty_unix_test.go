//go:build unix

package commands

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestShellOnPTY runs a command that checks that its stdin, stdout and
// stderr are a terminal; what it writes to stderr comes as stdout.
func TestShellOnPTY(t *testing.T) {
	r, err := run(t, "shell", map[string]any{"workdir": t.TempDir(), "usePTY": true,
		"command": "test -t 0 && test -t 1 && test -t 2 && tty && echo on-stderr >&2"})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != 0 {
		t.Errorf("rc %d, want 0: not a terminal\nstdout %q", rc, r.stdout.String())
	}
	if out := r.stdout.String(); !strings.HasPrefix(out, "/dev/") || !strings.Contains(out, "on-stderr") {
		t.Errorf("stdout %q, want the tty's name and on-stderr", out)
	}
	if r.stderr.Len() != 0 {
		t.Errorf("stderr %q: a terminal has one output", r.stderr.String())
	}
	if h := r.header.String(); !strings.Contains(h, " using PTY: True\n") || strings.Contains(h, "WARNING") {
		t.Errorf("header:\n%s", h)
	}
}

// TestShellPTYStdin types initial_stdin, a partial last line included, on
// the terminal, then end-of-file: cat sees both lines and exits.
func TestShellPTYStdin(t *testing.T) {
	dir := t.TempDir()
	r, err := run(t, "shell", map[string]any{"workdir": dir, "usePTY": true,
		"command": "cat >got; echo rc=$?", "initial_stdin": "one\ntwo"})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != 0 {
		t.Errorf("rc %d", rc)
	}
	if out := r.stdout.String(); !strings.Contains(out, "rc=0") {
		t.Errorf("stdout %q", out)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "got")); string(got) != "one\ntwo" {
		t.Errorf("cat read %q (%v), want %q", got, err, "one\ntwo")
	}
}

// TestShellPTYTimeoutKillsSession times out a command on a terminal whose
// shell left a background child: both die, and the command ends.
func TestShellPTYTimeoutKillsSession(t *testing.T) {
	dir := t.TempDir()
	r, err := run(t, "shell", map[string]any{"workdir": dir, "usePTY": true, "timeout": 0.2,
		"command": "sleep 60 & echo $! > child.pid; wait"})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != -1 {
		t.Errorf("rc %d, want -1", rc)
	}
	if h := r.header.String(); !strings.Contains(h, "process killed by signal 9") {
		t.Errorf("header:\n%s", h)
	}
	assertDead(t, filepath.Join(dir, "child.pid"))
}

// TestShellNoPTY runs a usePTY command on a machine with no
// pseudo-terminal: on pipes, and the header says why.
func TestShellNoPTY(t *testing.T) {
	openPTY = func() (*os.File, *os.File, error) { return nil, nil, errors.New("open /dev/ptmx: no such device") }
	t.Cleanup(func() { openPTY = realOpenPTY })
	r, err := run(t, "shell", map[string]any{"workdir": t.TempDir(), "usePTY": true,
		"command": "if test -t 1; then echo terminal; else echo pipes; fi"})
	if err != nil {
		t.Fatal(err)
	}
	if out := r.stdout.String(); out != "pipes\n" || r.rc(t) != 0 {
		t.Errorf("stdout %q rc %d", out, r.rc(t))
	}
	h := r.header.String()
	for _, want := range []string{
		" WARNING: usePTY asked for a pseudo-terminal, but open /dev/ptmx: no such device; using pipes\n",
		" using PTY: False\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("header lacks %q:\n%s", want, h)
		}
	}
}

var realOpenPTY = openPTY
