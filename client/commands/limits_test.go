package commands

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLimitsRefuseHugeSizes: sizes a master sends beyond the slave's
// limits are refused before anything is allocated (a blocksize of 1<<40
// exhausted the slave's memory, 1<<62 panicked in makeslice), with an
// error naming the argument and the limit.
func TestLimitsRefuseHugeSizes(t *testing.T) {
	dir := t.TempDir()
	logfiles := map[string]any{}
	for i := range DefaultLogfilesLimit + 1 {
		logfiles[strings.Repeat("l", i+1)] = "f"
	}
	for _, c := range []struct {
		name string
		args map[string]any
		want string
	}{
		{"upload_file", map[string]any{"path": "/x", "blocksize": int64(1) << 40}, "blocksize 1099511627776 is over this slave's limit of 1048576 bytes (commands.Limits.BlockSize)"},
		{"download_file", map[string]any{"path": "/x", "blocksize": int64(1) << 62}, "blocksize 4611686018427387904 is over this slave's limit of 1048576 bytes"},
		{"upload_directory", map[string]any{"path": "/x", "blocksize": DefaultBlockSizeLimit + 1}, "blocksize 1048577 is over"},
		{"uploadFile", map[string]any{"path": "/x", "blocksize": uint64(math.MaxUint64)}, `argument "blocksize": 18446744073709551615 is out of range`},
		{"download_file", map[string]any{"path": "/x", "blocksize": 1e300}, "out of range"},
		{"upload_file", map[string]any{"path": "/x", "blocksize": 16, "maxsize": -2}, "maxsize -2 is negative"},
		{"upload_file", map[string]any{"path": "/x", "blocksize": 16, "maxsize": 1e19}, `argument "maxsize": 1e+19 is out of range`},
		{"shell", map[string]any{"workdir": dir, "command": "true", "logfiles": logfiles}, "logfiles: the number of files 65 is over this slave's limit of 64 files (commands.Limits.Logfiles)"},
		{"shell", map[string]any{"workdir": dir, "command": "true", "timeout": 1e300}, `argument "timeout": 1e+300 seconds is out of range`},
	} {
		_, err := New(c.name, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: err = %v, want %q", c.name, c.args, err, c.want)
		}
	}
	if _, err := New("upload_file", map[string]any{"path": "/x", "blocksize": DefaultBlockSizeLimit}); err != nil {
		t.Errorf("blocksize at the limit: %v", err)
	}
	if _, err := (Limits{BlockSize: 10}).New("upload_file", map[string]any{"path": "/x", "blocksize": 11}); err == nil || !strings.Contains(err.Error(), "limit of 10 bytes") {
		t.Errorf("a configured limit: %v", err)
	}
}

// TestLimitsRefuseHugeSettings: buffer_size and max_line_length set how
// much output the slave holds; beyond their limits they are refused.
func TestLimitsRefuseHugeSettings(t *testing.T) {
	settings := func(size, line any) map[string]any {
		return map[string]any{"buffer_size": size, "buffer_timeout": 5, "newline_re": DefaultNewlineRE, "max_line_length": line}
	}
	for _, c := range []struct {
		args map[string]any
		want string
	}{
		{settings(int64(1)<<40, 4096), "buffer_size 1099511627776 is over this slave's limit of 1048576 bytes (commands.Limits.BufferSize)"},
		{settings(65536, int64(1)<<62), "max_line_length 4611686018427387904 is over this slave's limit of 65536 characters (commands.Limits.LineLength)"},
		{settings(65536, 1e30), `argument "max_line_length": 1e+30 is out of range`},
	} {
		if _, err := ParseSettings(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := ParseSettings(settings(DefaultBufferSizeLimit, DefaultLineLengthLimit)); err != nil {
		t.Errorf("settings at the limits: %v", err)
	}
	if _, err := (Limits{BufferSize: 100}).ParseSettings(settings(101, 10)); err == nil || !strings.Contains(err.Error(), "limit of 100 bytes") {
		t.Errorf("a configured limit: %v", err)
	}
}

// greedyMaster answers every read with all the data it has, whatever the
// length asked.
type greedyMaster struct {
	*fakeMaster
	data []byte
}

func (g *greedyMaster) ReadFile(context.Context, int) ([]byte, error) {
	data := g.data
	g.data = nil
	return data, nil
}

// TestDownloadRefusesOversizedReads: a master that answers a read with more
// than was asked cannot push a download past its maxsize.
func TestDownloadRefusesOversizedReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl")
	c, err := New("download_file", map[string]any{"path": path, "blocksize": 16, "maxsize": 32})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMaster{}
	err = c.Run(context.Background(), &greedyMaster{f, bytes.Repeat([]byte("x"), 1000)}, Settings{})
	if err == nil || !strings.Contains(err.Error(), "the master sent 1000 bytes for a read of 16") {
		t.Errorf("Run = %v, want the oversized read refused", err)
	}
	if got, _ := os.ReadFile(path); len(got) != 0 {
		t.Errorf("the download wrote %d bytes", len(got))
	}
	if r := f.result(t); r.rc(t) != 1 {
		t.Errorf("rc %d, want 1", r.rc(t))
	}
}
