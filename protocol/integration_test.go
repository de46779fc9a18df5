package protocol

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/remote"

	"github.com/buildslave/buildslave/internal/integration"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/slave"
)

// TestStockWorker attaches the stock Debian buildbot-worker 3.7 to a master
// built on Handler and a slave.Manager, runs a shell command and uploads a
// file; a stock worker with a wrong password is refused.
func TestStockWorker(t *testing.T) {
	integration.Require(t, "buildbot-worker")
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	w1, _ := slave.New("w1", "pw")
	m, err := slave.NewManager(slave.Config{Logger: log}, w1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	events, cancelEvents := m.Subscribe()
	defer cancelEvents()
	h := &Handler{Manager: m, Builders: []string{"hello"}, Logger: log}
	addr := startServer(t, &Server{Handler: h})

	worker := integration.NewWorker(t, addr.String(), "w1", "pw")
	worker.Start()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, "w1")
	if err != nil {
		t.Fatalf("stock worker did not attach: %v\n%s", err, worker.Log())
	}
	defer b.Release()
	c := b.Conn().(*Conn)
	info := c.Info()
	if info.Version == "" || info.Basedir != worker.Dir || info.Commands["shell"] == "" || info.NumCPUs < 1 {
		t.Errorf("info = %+v", info)
	}
	if fi, err := os.Stat(filepath.Join(worker.Dir, "hello")); err != nil || !fi.IsDir() {
		t.Errorf("builder directory not created: %v", err)
	}

	workdir := filepath.Join(worker.Dir, "hello")
	script := `for i in 1 2 3; do echo "line $i"; done; echo oops >&2; printf 'upload me\n' > out.txt; exit 3`
	cmd, err := c.Start(ctx, remote.Request{Name: "shell", Builder: "hello", Args: map[string]any{
		"workdir": workdir, "command": []any{"/bin/sh", "-c", script}, "env": map[string]any{},
		"want_stdout": true, "want_stderr": true, "logfiles": map[string]any{}, "timeout": 60,
		"usePTY": false, "logEnviron": false}})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	rc := -100
	for u := range cmd.Updates() {
		switch u.Key {
		case "stdout":
			stdout.WriteString(u.Text)
		case "stderr":
			stderr.WriteString(u.Text)
		case "rc":
			rc = u.RC
		}
	}
	if err := cmd.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "line 1\nline 2\nline 3\n" || stderr.String() != "oops\n" || rc != 3 {
		t.Errorf("stdout %q, stderr %q, rc %d", stdout.String(), stderr.String(), rc)
	}

	var up bytes.Buffer
	cmd, err = c.Start(ctx, remote.Request{Name: "upload_file", Builder: "hello", Upload: &up, Args: map[string]any{
		"path": filepath.Join(workdir, "out.txt"), "maxsize": nil, "blocksize": 4, "keepstamp": true}})
	if err != nil {
		t.Fatal(err)
	}
	rc = -100
	for u := range cmd.Updates() {
		if u.Key == "rc" {
			rc = u.RC
		}
	}
	if err := cmd.Wait(ctx); err != nil || rc != 0 || up.String() != "upload me\n" {
		t.Errorf("upload: err %v, rc %d, content %q", err, rc, up.String())
	}

	if l := worker.Log(); strings.Contains(l, "Traceback") || strings.Contains(l, "Unhandled") {
		t.Errorf("the worker logged an error:\n%s", l)
	}

	// A stock worker with a wrong password is refused with 401.
	bad := integration.NewWorker(t, addr.String(), "w1", "wrong-secret")
	bad.Start()
	for ev := range events {
		if ev.Kind == slave.Refused {
			break
		}
	}
	bad.Stop()
	if !bad.WaitLog("401", 10*time.Second) {
		t.Errorf("the refused worker's log does not show 401:\n%s", bad.Log())
	}
	refusals := logs.Matching("slave connection refused")
	if len(refusals) == 0 || !strings.Contains(refusals[0], "wrong password") {
		t.Errorf("refusal log lines: %q", refusals)
	}
	if strings.Contains(logs.String(), "wrong-secret") {
		t.Error("the password was logged")
	}
}
