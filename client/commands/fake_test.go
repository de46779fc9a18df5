package commands

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// fakeMaster records what a command sends and serves download data.
type fakeMaster struct {
	mu       sync.Mutex
	updates  [][][2]any // one entry per Update call
	ops      []string   // every call, in order
	upload   bytes.Buffer
	utime    [2]float64
	download *bytes.Reader
	failOp   string // this op returns an error
}

var _ Master = (*fakeMaster)(nil)

func (f *fakeMaster) call(op string) error {
	f.ops = append(f.ops, op)
	if op == f.failOp {
		return errors.New(op + " refused")
	}
	return nil
}

func (f *fakeMaster) Update(_ context.Context, pairs [][2]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, pairs)
	return f.call("update")
}

func (f *fakeMaster) UploadFileWrite(_ context.Context, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.upload.Write(data)
	return f.call("upload_file_write")
}

func (f *fakeMaster) UploadFileClose(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.call("upload_file_close")
}

func (f *fakeMaster) UploadFileUtime(_ context.Context, a, m float64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.utime = [2]float64{a, m}
	return f.call("upload_file_utime")
}

func (f *fakeMaster) UploadDirectoryWrite(_ context.Context, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.upload.Write(data)
	return f.call("upload_directory_write")
}

func (f *fakeMaster) UploadDirectoryUnpack(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.call("upload_directory_unpack")
}

func (f *fakeMaster) ReadFile(_ context.Context, n int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(fmt.Sprintf("read_file %d", n)); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	k, _ := f.download.Read(buf)
	return buf[:k], nil
}

func (f *fakeMaster) ReadFileClose(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.call("read_file_close")
}

// result is everything a command reported, streams joined.
type result struct {
	stdout, stderr, header strings.Builder
	logs                   map[string]*strings.Builder
	values                 map[string][]any // rc, elapsed, files, stat
	keys                   []string         // keys in the order sent
}

func (f *fakeMaster) result(t *testing.T) *result {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &result{logs: map[string]*strings.Builder{}, values: map[string][]any{}}
	for _, pairs := range f.updates {
		for _, kv := range pairs {
			key := kv[0].(string)
			r.keys = append(r.keys, key)
			switch key {
			case "stdout":
				r.stdout.WriteString(checkLines(t, kv[1]))
			case "stderr":
				r.stderr.WriteString(checkLines(t, kv[1]))
			case "header":
				r.header.WriteString(checkLines(t, kv[1]))
			case "log":
				v := kv[1].([]any)
				name := v[0].(string)
				if r.logs[name] == nil {
					r.logs[name] = &strings.Builder{}
				}
				r.logs[name].WriteString(checkLines(t, v[1]))
			default:
				r.values[key] = append(r.values[key], kv[1])
			}
		}
	}
	return r
}

// checkLines checks a [text, offsets, times] value and returns its text.
func checkLines(t *testing.T, v any) string {
	t.Helper()
	l := v.([]any)
	text, offsets, times := l[0].(string), l[1].([]int64), l[2].([]float64)
	runes := []rune(text)
	if len(offsets) != len(times) || len(offsets) == 0 {
		t.Fatalf("offsets %v and times %v do not match", offsets, times)
	}
	prev := -1
	for _, o := range offsets {
		if o <= int64(prev) || o >= int64(len(runes)) || runes[o] != '\n' {
			t.Fatalf("offset %d is not a newline in %q", o, text)
		}
		prev = int(o)
	}
	if prev != len(runes)-1 {
		t.Fatalf("text %q does not end at its last offset", text)
	}
	return text
}

// rc returns the single rc sent, failing if there is not exactly one.
func (r *result) rc(t *testing.T) int {
	t.Helper()
	if len(r.values["rc"]) != 1 {
		t.Fatalf("rc sent %d times: %v", len(r.values["rc"]), r.values["rc"])
	}
	return r.values["rc"][0].(int)
}

// run runs a command to its end against a fresh fake master.
func run(t *testing.T, name string, args map[string]any) (*result, error) {
	t.Helper()
	f := &fakeMaster{}
	return runWith(t, f, name, args)
}

func runWith(t *testing.T, f *fakeMaster, name string, args map[string]any) (*result, error) {
	t.Helper()
	c, err := New(name, args)
	if err != nil {
		t.Fatalf("New(%q): %v", name, err)
	}
	err = c.Run(context.Background(), f, Settings{})
	r := f.result(t)
	if len(r.values["elapsed"]) != 1 || r.keys[len(r.keys)-1] != "elapsed" {
		t.Errorf("elapsed is not sent last: keys %v", r.keys)
	}
	return r, err
}
