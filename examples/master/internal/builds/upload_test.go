package builds

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUploadSizeIsBounded: an upload step sends max_upload_size as
// maxsize, a file over it fails the step, and the partial file is removed.
func TestUploadSizeIsBounded(t *testing.T) {
	up := t.TempDir()
	g := newGoSlave(t, Config{UploadDir: up, Limits: Limits{MaxUploadSize: 1 << 20}},
		Step{Name: "make", Shell: "head -c 5000 /dev/zero > big.bin && head -c 1000 /dev/zero > small.bin", Timeout: DefaultStepTimeout},
		Step{Name: "small", Upload: "small.bin"},
		Step{Name: "big", Upload: "big.bin", MaxUploadSize: 4096},
	)
	state, steps := g.build(t)
	if state != Exception || len(steps) != 3 || steps[1].state != Success || steps[2].state != Exception {
		t.Fatalf("build %s, steps %+v", state, steps)
	}
	if want := "big.bin is larger than max_upload_size (4 KiB)"; !strings.Contains(steps[2].output, want) {
		t.Errorf("the big step's output lacks %q:\n%s", want, steps[2].output)
	}
	if fi, err := os.Stat(filepath.Join(up, "b-1", "small.bin")); err != nil || fi.Size() != 1000 {
		t.Errorf("small.bin: %v %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(up, "b-1", "big.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the partial big.bin was kept: %v", err)
	}
	if want := "limit=max_upload_size"; !strings.Contains(g.log.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, g.log.String())
	}
}

// TestUploadDiskFull: a write error on the master (here /dev/full's
// ENOSPC) fails the step with that reason and removes the file.
func TestUploadDiskFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	up := t.TempDir()
	dest := filepath.Join(up, "b-1", "out.bin")
	if err := os.MkdirAll(filepath.Dir(dest), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", dest); err != nil { // the disk is full
		t.Fatal(err)
	}
	g := newGoSlave(t, Config{UploadDir: up},
		Step{Name: "make", Shell: "head -c 100000 /dev/zero > out.bin", Timeout: DefaultStepTimeout},
		Step{Name: "upload", Upload: "out.bin"},
	)
	state, steps := g.build(t)
	if state != Exception || len(steps) != 2 || steps[1].state != Exception {
		t.Fatalf("build %s, steps %+v", state, steps)
	}
	if want := "no space left on device"; !strings.Contains(steps[1].output, want) {
		t.Errorf("the upload step's output lacks %q:\n%s", want, steps[1].output)
	}
	if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the partial file was kept: %v", err)
	}
}

// TestUploadWriterEnforcesTheLimit: the master's writer takes no byte over
// the limit, whatever the slave sends.
func TestUploadWriterEnforcesTheLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	u, err := createUpload(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := u.Write([]byte("0123456")); n != 7 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if _, err := u.Write([]byte("7890")); !errors.Is(err, errTooLarge) {
		t.Errorf("a write past the limit = %v", err)
	}
	if _, err := u.Write([]byte("7")); !errors.Is(err, errTooLarge) {
		t.Errorf("a write after the refusal = %v", err)
	}
	if _, err := u.end(0, nil); !errors.Is(err, errTooLarge) {
		t.Errorf("end = %v, want the refusal", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file was kept: %v", err)
	}
}
