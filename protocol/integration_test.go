package protocol

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/integration"
	"github.com/buildslave/buildslave/internal/remotetest"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// TestStockWorker attaches the stock Debian buildbot-worker 3.7 on msgpack
// to a master built on Handler and a slave.Manager, and runs every
// command, checking each result; a stock worker with a wrong password is
// refused.
func TestStockWorker(t *testing.T) {
	integration.Require(t, "buildbot-worker")
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	w1, _ := slave.New("w1", "pw", slave.KeepaliveInterval(time.Second))
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
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
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
	workdir := filepath.Join(worker.Dir, "hello")
	if fi, err := os.Stat(workdir); err != nil || !fi.IsDir() {
		t.Errorf("builder directory not created: %v", err)
	}

	t.Run("shell", func(t *testing.T) {
		script := `for i in 1 2 3; do echo "line $i"; done; echo oops >&2; mkdir -p dist/sub; printf 'upload me\n' > dist/out.txt; echo x > dist/sub/y.txt; exit 3`
		u := remotetest.Run(t, ctx, c, remote.Request{Name: "shell", Builder: "hello", Args: map[string]any{
			"workdir": workdir, "command": []any{"/bin/sh", "-c", script}, "env": map[string]any{},
			"want_stdout": true, "want_stderr": true, "logfiles": map[string]any{}, "timeout": 60,
			"usePTY": false, "logEnviron": false}})
		stdout, rc := remotetest.Output(u, "stdout")
		stderr, _ := remotetest.Output(u, "stderr")
		if stdout != "line 1\nline 2\nline 3\n" || stderr != "oops\n" || rc != 3 {
			t.Errorf("stdout %q, stderr %q, rc %d", stdout, stderr, rc)
		}
	})

	t.Run("interrupt", func(t *testing.T) {
		cmd, err := c.Start(ctx, remote.Request{Name: "shell", Builder: "hello", Args: map[string]any{
			"workdir": workdir, "command": "echo started; sleep 60", "env": map[string]any{},
			"want_stdout": true, "want_stderr": true, "logfiles": map[string]any{}, "timeout": 120,
			"usePTY": false, "logEnviron": false}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var updates []remote.Update
		for u := range cmd.Updates() {
			updates = append(updates, u)
			if u.Key == "stdout" {
				if err := cmd.Interrupt(ctx, "test says stop"); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := cmd.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		stdout, rc := remotetest.Output(updates, "stdout")
		if stdout != "started\n" || rc == 0 || rc == -100 {
			t.Errorf("interrupted command: stdout %q, rc %d", stdout, rc)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("the interrupted command ran %v: the interrupt did not stop it", d)
		}
	})

	t.Run("upload_file", func(t *testing.T) {
		var up bytes.Buffer
		u := remotetest.Run(t, ctx, c, remote.Request{Name: "upload_file", Builder: "hello", Upload: &up, Args: map[string]any{
			"path": filepath.Join(workdir, "dist", "out.txt"), "maxsize": nil, "blocksize": 4, "keepstamp": true}})
		if _, rc := remotetest.Output(u, ""); rc != 0 || up.String() != "upload me\n" {
			t.Errorf("rc %d, content %q", rc, up.String())
		}
	})

	t.Run("upload_directory", func(t *testing.T) {
		var up bytes.Buffer
		u := remotetest.Run(t, ctx, c, remote.Request{Name: "upload_directory", Builder: "hello", Upload: &up, Args: map[string]any{
			"path": filepath.Join(workdir, "dist"), "maxsize": nil, "blocksize": 16384, "compress": nil}})
		if _, rc := remotetest.Output(u, ""); rc != 0 {
			t.Errorf("rc %d", rc)
		}
		files := map[string]string{}
		tr := tar.NewReader(&up)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				body, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				files[strings.TrimPrefix(h.Name, "./")] = string(body)
			}
		}
		if files["out.txt"] != "upload me\n" || files["sub/y.txt"] != "x\n" || len(files) != 2 {
			t.Errorf("archive holds %q", files)
		}
	})

	t.Run("download_file", func(t *testing.T) {
		content := strings.Repeat("downloaded bytes\n", 3000) // several blocks
		dest := filepath.Join(workdir, "downloaded.txt")
		u := remotetest.Run(t, ctx, c, remote.Request{Name: "download_file", Builder: "hello", Download: strings.NewReader(content),
			Args: map[string]any{"path": dest, "maxsize": nil, "blocksize": 16384, "mode": 0o640}})
		if _, rc := remotetest.Output(u, ""); rc != 0 {
			t.Errorf("rc %d", rc)
		}
		got, err := os.ReadFile(dest)
		if err != nil || string(got) != content {
			t.Errorf("downloaded file: %d bytes of %d, %v", len(got), len(content), err)
		}
		if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o640 {
			t.Errorf("downloaded file's mode: %v, %v", fi.Mode(), err)
		}
	})

	t.Run("file commands", func(t *testing.T) {
		dir := filepath.Join(workdir, "newdir", "deeper")
		u := remotetest.Run(t, ctx, c, remote.Request{Name: "mkdir", Builder: "hello", Args: map[string]any{"paths": []string{dir}}})
		if _, rc := remotetest.Output(u, ""); rc != 0 {
			t.Errorf("mkdir: rc %d", rc)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("mkdir: %v", err)
		}

		u = remotetest.Run(t, ctx, c, remote.Request{Name: "stat", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "dist", "out.txt")}})
		st, _ := remotetest.Value(u, "stat").([]any)
		if _, rc := remotetest.Output(u, ""); rc != 0 || len(st) != 10 || !isInt(st[6], len("upload me\n")) {
			t.Errorf("stat: rc %d, %#v", rc, remotetest.Value(u, "stat"))
		}
		u = remotetest.Run(t, ctx, c, remote.Request{Name: "stat", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "no-such-file")}})
		if _, rc := remotetest.Output(u, ""); rc == 0 {
			t.Errorf("stat of a missing file: rc 0, %#v", u)
		}

		u = remotetest.Run(t, ctx, c, remote.Request{Name: "glob", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "dist", "*.txt")}})
		files, _ := remotetest.Value(u, "files").([]any)
		if _, rc := remotetest.Output(u, ""); rc != 0 || len(files) != 1 || files[0] != filepath.Join(workdir, "dist", "out.txt") {
			t.Errorf("glob: rc %d, %#v", rc, remotetest.Value(u, "files"))
		}

		u = remotetest.Run(t, ctx, c, remote.Request{Name: "listdir", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "dist")}})
		files, _ = remotetest.Value(u, "files").([]any)
		if _, rc := remotetest.Output(u, ""); rc != 0 || len(files) != 2 || !slices.Contains(files, any("sub")) || !slices.Contains(files, any("out.txt")) {
			t.Errorf("listdir: rc %d, %#v", rc, remotetest.Value(u, "files"))
		}

		u = remotetest.Run(t, ctx, c, remote.Request{Name: "cpdir", Builder: "hello", Args: map[string]any{
			"from_path": filepath.Join(workdir, "dist"), "to_path": filepath.Join(workdir, "dist2")}})
		if _, rc := remotetest.Output(u, ""); rc != 0 {
			t.Errorf("cpdir: rc %d", rc)
		}
		if got, err := os.ReadFile(filepath.Join(workdir, "dist2", "sub", "y.txt")); err != nil || string(got) != "x\n" {
			t.Errorf("cpdir: %q, %v", got, err)
		}

		u = remotetest.Run(t, ctx, c, remote.Request{Name: "rmdir", Builder: "hello", Args: map[string]any{
			"paths": []string{filepath.Join(workdir, "newdir"), filepath.Join(workdir, "dist2")}}})
		if _, rc := remotetest.Output(u, ""); rc != 0 {
			t.Errorf("rmdir: rc %d", rc)
		}
		for _, p := range []string{"newdir", "dist2"} {
			if _, err := os.Stat(filepath.Join(workdir, p)); !os.IsNotExist(err) {
				t.Errorf("rmdir left %s: %v", p, err)
			}
		}

		u = remotetest.Run(t, ctx, c, remote.Request{Name: "rmfile", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "downloaded.txt")}})
		if _, rc := remotetest.Output(u, ""); rc != 0 {
			t.Errorf("rmfile: rc %d", rc)
		}
		if _, err := os.Stat(filepath.Join(workdir, "downloaded.txt")); !os.IsNotExist(err) {
			t.Errorf("rmfile: %v", err)
		}
		if _, err := os.Stat(filepath.Join(workdir, "dist", "out.txt")); err != nil {
			t.Errorf("rmfile or rmdir removed more than asked: %v", err)
		}
	})

	t.Run("keepalives", func(t *testing.T) {
		for i := range 3 {
			if err := c.Keepalive(ctx); err != nil {
				t.Fatalf("keepalive %d: %v", i, err)
			}
		}
		// The manager's own keepalives (every second) are answered: each
		// reply moves LastSeen.
		first, _ := m.State("w1")
		for st := first; !st.LastSeen.After(first.LastSeen); st, _ = m.State("w1") {
			if ctx.Err() != nil {
				t.Fatal("the manager's keepalives (every second) did not move LastSeen")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if st, _ := m.State("w1"); !st.Attached {
			t.Errorf("the worker is no longer attached: %+v", st)
		}
	})

	if l := worker.Log(); strings.Contains(l, "Traceback") || strings.Contains(l, "Unhandled") {
		t.Errorf("the worker logged an error:\n%s", l)
	}

	t.Run("wrong password", func(t *testing.T) {
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
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		b.Release()
		if err := m.GracefulShutdown("w1"); err != nil {
			t.Fatal(err)
		}
		if !worker.WaitExit(30 * time.Second) {
			t.Errorf("the worker did not exit:\n%s", worker.Log())
		}
	})
}

// isInt reports whether v is the decoded integer n.
func isInt(v any, n int) bool {
	i, ok := wire.AsInt(v)
	return ok && i == int64(n)
}
