//go:build unix

package commands

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestMkdirAndRmdir(t *testing.T) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a", "deep"), filepath.Join(base, "b")
	r, _ := run(t, "mkdir", map[string]any{"paths": []any{a, b}})
	if rc := r.rc(t); rc != 0 {
		t.Fatalf("mkdir rc %d", rc)
	}
	locked := filepath.Join(a, "locked")
	if err := os.MkdirAll(filepath.Join(locked, "x"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	r, _ = run(t, "rmdir", map[string]any{"paths": []any{filepath.Join(base, "a"), b}})
	if rc := r.rc(t); rc != 0 {
		t.Fatalf("rmdir rc %d, header %q", rc, r.header.String())
	}
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestMkdirFailureReportsErrno(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	r, _ := run(t, "mkdir", map[string]any{"paths": []any{filepath.Join(file, "sub")}})
	if rc := r.rc(t); rc != int(syscall.ENOTDIR) {
		t.Errorf("rc %d, want ENOTDIR", rc)
	}
	if h := r.header.String(); !strings.HasPrefix(h, "mkdir: Not a directory: ") {
		t.Errorf("header %q", h)
	}
}

func TestListdirStatRmfile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f.txt")
	if err := os.WriteFile(f, []byte("12345"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o777); err != nil {
		t.Fatal(err)
	}
	r, _ := run(t, "listdir", map[string]any{"path": dir})
	if got := r.values["files"]; len(got) != 1 || !reflect.DeepEqual(got[0], []any{"f.txt", "sub"}) {
		t.Errorf("files %v", got)
	}
	r, _ = run(t, "stat", map[string]any{"path": f})
	st := r.values["stat"][0].([]any)
	if len(st) != 10 || st[0].(int64)&0o777 != 0o640 || st[6].(int64) != 5 {
		t.Errorf("stat %v", st)
	}
	r, _ = run(t, "rmfile", map[string]any{"path": filepath.Join(dir, "sub")})
	if rc := r.rc(t); rc != int(syscall.EISDIR) {
		t.Errorf("rmfile on a directory: rc %d", rc)
	}
	r, _ = run(t, "rmfile", map[string]any{"path": f})
	if rc := r.rc(t); rc != 0 {
		t.Errorf("rmfile rc %d", rc)
	}
	r, _ = run(t, "stat", map[string]any{"path": f})
	if rc := r.rc(t); rc != int(syscall.ENOENT) || r.values["stat"] != nil {
		t.Errorf("stat of a removed file: rc %d, %v", rc, r.values)
	}
	r, _ = run(t, "listdir", map[string]any{"path": f})
	if rc := r.rc(t); rc != int(syscall.ENOENT) {
		t.Errorf("listdir of a removed file: rc %d", rc)
	}
}

func TestGlob(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a.txt", "b.log", ".hidden.txt", "sub/c.txt", "sub/deeper/d.txt", ".git/e.txt"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string][]string{
		"*.txt":         {"a.txt"},
		".*.txt":        {".hidden.txt"},
		"**/*.txt":      {"a.txt", "sub/c.txt", "sub/deeper/d.txt"},
		"sub/**":        {"sub/", "sub/c.txt", "sub/deeper", "sub/deeper/d.txt"},
		"s?b/[!x]*.txt": {"sub/c.txt"},
		"a.txt":         {"a.txt"},
		"nothing*":      nil,
	}
	for pattern, want := range tests {
		r, _ := run(t, "glob", map[string]any{"path": filepath.Join(dir, pattern)})
		var got []string
		for _, f := range r.values["files"][0].([]any) {
			got = append(got, strings.TrimPrefix(f.(string), dir+"/"))
		}
		slices.Sort(got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("glob %q = %q, want %q", pattern, got, want)
		}
	}
}

func TestCpdir(t *testing.T) {
	base := t.TempDir()
	from := filepath.Join(base, "src")
	if err := os.MkdirAll(filepath.Join(from, "sub"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(from, "sub", "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/f", filepath.Join(from, "link")); err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(base, "new", "dst")
	r, _ := run(t, "cpdir", map[string]any{"from_path": from, "to_path": to})
	if rc := r.rc(t); rc != 0 {
		t.Fatalf("rc %d\n%s%s", rc, r.header.String(), r.stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(to, "sub", "f")); err != nil || string(b) != "data" {
		t.Errorf("copy: %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(to, "link")); err != nil || l != "sub/f" {
		t.Errorf("symlink: %q, %v", l, err)
	}
	if !strings.Contains(r.stdout.String(), "sub/f") {
		t.Errorf("cp -v output missing: %q", r.stdout.String())
	}
	r, _ = run(t, "cpdir", map[string]any{"from_path": filepath.Join(base, "missing"), "to_path": to + "2"})
	if rc := r.rc(t); rc == 0 {
		t.Error("copying a missing directory succeeded")
	}
}
