package commands

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// These run on Windows only (.ci/run cross-vets them): a string command
// through cmd.exe, lists, job objects, Windows's environment names, stat,
// glob and cpdir there.

func TestShellStringUnderCmd(t *testing.T) {
	r, err := run(t, "shell", map[string]any{"workdir": t.TempDir(),
		"command": `echo hello& echo "quoted arg"& echo oops 1>&2& exit /b 3`})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != 3 {
		t.Errorf("rc %d, want 3", rc)
	}
	if out := r.stdout.String(); !strings.Contains(out, "hello") || !strings.Contains(out, `"quoted arg"`) {
		t.Errorf("stdout %q", out)
	}
	if !strings.Contains(r.stderr.String(), "oops") {
		t.Errorf("stderr %q", r.stderr.String())
	}
}

func TestShellListFindsProgramInChildPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "my bin")
	if err := os.MkdirAll(bin, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "greet.bat"), []byte("@echo hi %1\r\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	r, err := run(t, "shell", map[string]any{"workdir": dir, "command": []any{"greet", "there"},
		"env": map[string]any{"Path": []any{bin, "${PATH}"}}})
	if err != nil {
		t.Fatal(err)
	}
	if rc, out := r.rc(t), r.stdout.String(); rc != 0 || !strings.Contains(out, "hi there") {
		t.Errorf("rc %d stdout %q stderr %q", rc, out, r.stderr.String())
	}
}

func TestShellAbsoluteExeRunsDirectly(t *testing.T) {
	r, err := run(t, "shell", map[string]any{"workdir": t.TempDir(),
		"command": []any{comspec(), "/c", "echo", "direct"}})
	if err != nil {
		t.Fatal(err)
	}
	if rc, out := r.rc(t), r.stdout.String(); rc != 0 || !strings.Contains(out, "direct") {
		t.Errorf("rc %d stdout %q", rc, out)
	}
}

// TestShellTimeoutKillsJob times out a cmd.exe that started a background
// ping holding the output pipes: terminating the job ends both at once,
// well before the pipes' grace period.
func TestShellTimeoutKillsJob(t *testing.T) {
	start := time.Now()
	r, err := run(t, "shell", map[string]any{"workdir": t.TempDir(), "timeout": 0.5,
		"command": "start /b ping -n 60 127.0.0.1 & ping -n 60 127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != -1 {
		t.Errorf("rc %d, want -1", rc)
	}
	if h := r.header.String(); !strings.Contains(h, "process killed by terminating its job object") {
		t.Errorf("header:\n%s", h)
	}
	if took := time.Since(start); took >= pipeGrace {
		t.Errorf("took %v: the background ping outlived the job", took)
	}
}

func TestShellPTYRefusedOnWindows(t *testing.T) {
	r, err := run(t, "shell", map[string]any{"workdir": t.TempDir(), "usePTY": true, "command": "echo ok"})
	if err != nil {
		t.Fatal(err)
	}
	h := r.header.String()
	if r.rc(t) != 0 || !strings.Contains(h, "no pseudo-terminals on Windows; using pipes\n") ||
		!strings.Contains(h, " using PTY: False\n") {
		t.Errorf("rc %d header:\n%s", r.rc(t), h)
	}
}

func TestChildEnvIgnoresCase(t *testing.T) {
	base := []string{`Path=C:\Windows`, "=C:=C:\\work", "home=h"}
	got, err := childEnv(base, map[string]any{"PATH": []any{`C:\tools`, "${path}"}}, `C:\w`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"=C:=C:\\work", "HOME=h", `PATH=C:\tools;C:\Windows`, `PWD=C:\w`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestStatGlobCpdirOnWindows(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, p := range []string{`a.txt`, `sub\b.txt`, `tool.exe`} {
		p = filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("data"), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	for path, want := range map[string]int64{src: 0o040777, filepath.Join(src, "a.txt"): 0o100666,
		filepath.Join(src, "tool.exe"): 0o100777} {
		r, _ := run(t, "stat", map[string]any{"path": path})
		if st := r.values["stat"][0].([]any); st[0].(int64) != want {
			t.Errorf("stat %s: mode %o, want %o", path, st[0], want)
		}
	}
	r, _ := run(t, "glob", map[string]any{"path": src + `\**\*.txt`})
	var got []string
	for _, f := range r.values["files"][0].([]any) {
		got = append(got, f.(string))
	}
	slices.Sort(got)
	if want := []string{src + `\a.txt`, src + `\sub\b.txt`}; !reflect.DeepEqual(got, want) {
		t.Errorf("glob = %q, want %q", got, want)
	}
	to := filepath.Join(dir, "new", "dst")
	r, _ = run(t, "cpdir", map[string]any{"from_path": src, "to_path": to})
	if rc := r.rc(t); rc != 0 {
		t.Fatalf("cpdir rc %d\n%s", rc, r.header.String())
	}
	if b, err := os.ReadFile(filepath.Join(to, "sub", "b.txt")); err != nil || string(b) != "data" {
		t.Errorf("copy: %q, %v", b, err)
	}
	if r, _ = run(t, "cpdir", map[string]any{"from_path": src, "to_path": to}); r.rc(t) != 1 {
		t.Errorf("cpdir onto an existing directory: rc %d", r.rc(t))
	}
}
