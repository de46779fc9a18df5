package commands

import (
	"slices"
	"strings"
	"testing"
)

func TestNewRejects(t *testing.T) {
	if _, err := New("frobnicate", nil); err == nil || !strings.Contains(err.Error(), "unrecognized") {
		t.Errorf("unknown command: %v", err)
	}
	if _, err := New("mkdir", map[string]any{}); err == nil || !strings.Contains(err.Error(), "paths") {
		t.Errorf("missing arg: %v", err)
	}
	if _, err := New("upload_directory", map[string]any{"path": "/x", "blocksize": 10, "compress": "bz2"}); err == nil {
		t.Error("bz2 accepted")
	}
}

func TestNames(t *testing.T) {
	names := Names()
	for _, n := range []string{"shell", "upload_file", "uploadFile", "download_file", "glob", "cpdir"} {
		if !slices.Contains(names, n) {
			t.Errorf("Names() lacks %q", n)
		}
	}
	if !slices.IsSorted(names) {
		t.Error("Names() is not sorted")
	}
}
