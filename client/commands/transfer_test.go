package commands

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestUploadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "art.bin")
	data := bytes.Repeat([]byte("0123456789"), 10)
	if err := os.WriteFile(path, data, 0o666); err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1700000000, 0)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	f := &fakeMaster{}
	r, err := runWith(t, f, "upload_file", map[string]any{"path": path, "blocksize": 32, "maxsize": nil, "keepstamp": true})
	if err != nil {
		t.Fatal(err)
	}
	if rc := r.rc(t); rc != 0 || !bytes.Equal(f.upload.Bytes(), data) {
		t.Fatalf("rc %d, uploaded %q", rc, f.upload.Bytes())
	}
	writes := slices.DeleteFunc(slices.Clone(f.ops), func(op string) bool { return op == "update" })
	want := []string{"upload_file_write", "upload_file_write", "upload_file_write", "upload_file_write",
		"upload_file_close", "upload_file_utime"}
	if !reflect.DeepEqual(writes, want) {
		t.Errorf("ops %v, want %v", writes, want)
	}
	if f.utime[1] != 1700000000 {
		t.Errorf("utime %v", f.utime)
	}
	if r.header.String() != "sending "+path+"\n" {
		t.Errorf("header %q", r.header.String())
	}
}

func TestUploadFileLimits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("0123456789"), 0o666); err != nil {
		t.Fatal(err)
	}
	f := &fakeMaster{}
	r, err := runWith(t, f, "upload_file", map[string]any{"path": path, "blocksize": 4, "maxsize": 10})
	if err != nil || r.rc(t) != 0 {
		t.Errorf("exactly maxsize: err %v rc %d", err, r.rc(t))
	}
	f = &fakeMaster{}
	r, _ = runWith(t, f, "upload_file", map[string]any{"path": path, "blocksize": 4, "maxsize": 6})
	if r.rc(t) != 1 || f.upload.String() != "012345" || !strings.Contains(r.stderr.String(), "Maximum filesize reached") {
		t.Errorf("over maxsize: rc %d, uploaded %q, stderr %q", r.rc(t), f.upload.String(), r.stderr.String())
	}
	f = &fakeMaster{}
	r, _ = runWith(t, f, "upload_file", map[string]any{"path": filepath.Join(dir, "missing"), "blocksize": 4})
	if r.rc(t) != 1 || !strings.Contains(r.stderr.String(), "Cannot open file") || !slices.Contains(f.ops, "upload_file_close") {
		t.Errorf("missing file: rc %d, stderr %q, ops %v", r.rc(t), r.stderr.String(), f.ops)
	}
	f = &fakeMaster{}
	r, _ = runWith(t, f, "upload_file", map[string]any{"path": dir, "blocksize": 4})
	if r.rc(t) != 1 || !strings.Contains(r.stderr.String(), "Cannot open file") {
		t.Errorf("a directory: rc %d, stderr %q", r.rc(t), r.stderr.String())
	}
	f = &fakeMaster{failOp: "upload_file_write"}
	r, err = runWith(t, f, "upload_file", map[string]any{"path": path, "blocksize": 4})
	if err == nil || r.rc(t) != 1 {
		t.Errorf("master refuses the write: err %v, rc %d", err, r.rc(t))
	}
}

func TestUploadInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("0123456789"), 0o666); err != nil {
		t.Fatal(err)
	}
	c, err := New("upload_file", map[string]any{"path": path, "blocksize": 1})
	if err != nil {
		t.Fatal(err)
	}
	c.Interrupt("stop")
	f := &fakeMaster{}
	if err := c.Run(context.Background(), f, Settings{}); err != nil {
		t.Fatal(err)
	}
	if rc := f.result(t).rc(t); rc != 1 || f.upload.Len() != 0 {
		t.Errorf("rc %d, uploaded %q", rc, f.upload.String())
	}
}

func TestDownloadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "tool.sh")
	f := &fakeMaster{download: bytes.NewReader([]byte("#!/bin/sh\necho hi\n"))}
	r, err := runWith(t, f, "download_file", map[string]any{"path": path, "blocksize": 8, "maxsize": nil, "mode": 0o750})
	if err != nil || r.rc(t) != 0 {
		t.Fatalf("err %v rc %d", err, r.rc(t))
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "#!/bin/sh\necho hi\n" {
		t.Fatalf("file %q, %v", got, err)
	}
	if fi, _ := os.Stat(path); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o750 { // Windows has a read-only bit only
		t.Errorf("mode %v", fi.Mode())
	}
	if want := []string{"read_file 8", "read_file 8", "read_file 8", "read_file 8", "read_file_close"}; !reflect.DeepEqual(f.ops[:5], want) {
		t.Errorf("ops %v", f.ops)
	}

	f = &fakeMaster{download: bytes.NewReader([]byte("0123456789"))}
	r, _ = runWith(t, f, "download_file", map[string]any{"path": path, "blocksize": 8, "maxsize": 9, "mode": nil})
	if r.rc(t) != 1 || !strings.Contains(r.stderr.String(), "Maximum filesize") {
		t.Errorf("over maxsize: rc %d stderr %q", r.rc(t), r.stderr.String())
	}

	f = &fakeMaster{download: bytes.NewReader(nil), failOp: "read_file 8"}
	r, err = runWith(t, f, "download_file", map[string]any{"path": path, "blocksize": 8})
	if err == nil || r.rc(t) != 1 || !slices.Contains(f.ops, "read_file_close") {
		t.Errorf("master fails the read: err %v rc %d ops %v", err, r.rc(t), f.ops)
	}

	f = &fakeMaster{download: bytes.NewReader(nil)}
	r, _ = runWith(t, f, "download_file", map[string]any{"path": filepath.Dir(path), "blocksize": 8})
	if r.rc(t) != 1 || !strings.Contains(r.stderr.String(), "Cannot open file") {
		t.Errorf("unwritable path: rc %d stderr %q", r.rc(t), r.stderr.String())
	}
}

func TestUploadDirectory(t *testing.T) {
	for _, compress := range []any{nil, "gz"} {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "sub", "empty"), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sub", "a.txt"), []byte("aaa"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("sub/a.txt", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		f := &fakeMaster{}
		r, err := runWith(t, f, "upload_directory", map[string]any{"path": dir, "blocksize": 100, "maxsize": nil, "compress": compress})
		if err != nil || r.rc(t) != 0 {
			t.Fatalf("compress %v: err %v rc %d stderr %q", compress, err, r.rc(t), r.stderr.String())
		}
		if f.ops[len(f.ops)-2] != "upload_directory_unpack" {
			t.Errorf("ops %v", f.ops)
		}
		var in io.Reader = &f.upload
		if compress != nil {
			if in, err = gzip.NewReader(in); err != nil {
				t.Fatal(err)
			}
		}
		var names []string
		tr := tar.NewReader(in)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(tr)
			names = append(names, h.Name+"="+string(body)+h.Linkname)
		}
		want := []string{"link=sub/a.txt", "sub/=", "sub/a.txt=aaa", "sub/empty/="}
		if !reflect.DeepEqual(names, want) {
			t.Errorf("compress %v: archive %q, want %q", compress, names, want)
		}
	}
}

func TestUploadDirectoryTruncated(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("x"), 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &fakeMaster{}
	r, _ := runWith(t, f, "upload_directory", map[string]any{"path": dir, "blocksize": 512, "maxsize": 1024})
	if r.rc(t) != 1 || f.upload.Len() != 1024 || slices.Contains(f.ops, "upload_directory_unpack") {
		t.Errorf("rc %d, sent %d bytes, ops %v", r.rc(t), f.upload.Len(), f.ops)
	}
}
