package pb_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/integration"
	"github.com/buildslave/buildslave/internal/remotetest"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// startServer serves s on a loopback port until the test ends.
func startServer(t *testing.T, s *pb.Server) net.Addr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return l.Addr()
}

// TestStockWorkerOnDefaultSettings attaches the stock Debian
// buildbot-worker 3.7, created with create-worker's defaults (PB), to a
// master built on Server and a slave.Manager, and runs every command.
func TestStockWorkerOnDefaultSettings(t *testing.T) {
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
	addr := startServer(t, &pb.Server{Manager: m, Builders: []string{"hello"}, Logger: log})

	worker := integration.NewPBWorker(t, addr.String(), "w1", "pw", "--keepalive=1")
	worker.Start()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, "w1")
	if err != nil {
		t.Fatalf("stock worker did not attach: %v\n%s", err, worker.Log())
	}
	defer b.Release()
	c := b.Conn().(*pb.Conn)
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
		if _, rc := remotetest.Output(updates, "stdout"); rc == 0 || rc == -100 {
			t.Errorf("interrupted command's rc = %d", rc)
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
		var names []string
		tr := tar.NewReader(&up)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, strings.TrimPrefix(h.Name, "./"))
		}
		if !slices.Contains(names, "out.txt") || !slices.Contains(names, "sub/y.txt") {
			t.Errorf("archive holds %q", names)
		}
	})

	t.Run("download_file", func(t *testing.T) {
		content := strings.Repeat("downloaded bytes\n", 3000)
		dest := filepath.Join(workdir, "downloaded.txt")
		u := remotetest.Run(t, ctx, c, remote.Request{Name: "download_file", Builder: "hello", Download: strings.NewReader(content),
			Args: map[string]any{"path": dest, "maxsize": nil, "blocksize": 16384, "mode": nil}})
		if _, rc := remotetest.Output(u, ""); rc != 0 {
			t.Errorf("rc %d", rc)
		}
		if got, err := os.ReadFile(dest); err != nil || string(got) != content {
			t.Errorf("downloaded file: %d bytes, %v", len(got), err)
		}
	})

	t.Run("file commands", func(t *testing.T) {
		dir := filepath.Join(workdir, "newdir")
		remotetest.Run(t, ctx, c, remote.Request{Name: "mkdir", Builder: "hello", Args: map[string]any{"paths": []string{dir}}})
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("mkdir: %v", err)
		}
		u := remotetest.Run(t, ctx, c, remote.Request{Name: "stat", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "dist", "out.txt")}})
		if st := pb.AsList(remotetest.Value(u, "stat")); len(st) != 10 || st[6] != int64(len("upload me\n")) {
			t.Errorf("stat = %v", remotetest.Value(u, "stat"))
		}
		u = remotetest.Run(t, ctx, c, remote.Request{Name: "glob", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "dist", "*.txt")}})
		if files := pb.AsList(remotetest.Value(u, "files")); len(files) != 1 || files[0] != filepath.Join(workdir, "dist", "out.txt") {
			t.Errorf("glob = %v", remotetest.Value(u, "files"))
		}
		u = remotetest.Run(t, ctx, c, remote.Request{Name: "listdir", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "dist")}})
		if files := pb.AsList(remotetest.Value(u, "files")); len(files) != 2 || !slices.Contains(files, any("sub")) {
			t.Errorf("listdir = %v", remotetest.Value(u, "files"))
		}
		u = remotetest.Run(t, ctx, c, remote.Request{Name: "cpdir", Builder: "hello", Args: map[string]any{
			"from_path": filepath.Join(workdir, "dist"), "to_path": filepath.Join(workdir, "dist2")}})
		if _, err := os.Stat(filepath.Join(workdir, "dist2", "sub", "y.txt")); err != nil {
			t.Errorf("cpdir: %v", err)
		}
		remotetest.Run(t, ctx, c, remote.Request{Name: "rmdir", Builder: "hello", Args: map[string]any{"paths": []string{dir, filepath.Join(workdir, "dist2")}}})
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("rmdir left %s: %v", dir, err)
		}
		remotetest.Run(t, ctx, c, remote.Request{Name: "rmfile", Builder: "hello", Args: map[string]any{"path": filepath.Join(workdir, "downloaded.txt")}})
		if _, err := os.Stat(filepath.Join(workdir, "downloaded.txt")); !os.IsNotExist(err) {
			t.Errorf("rmfile: %v", err)
		}
	})

	t.Run("keepalives both ways", func(t *testing.T) {
		if err := c.Keepalive(ctx); err != nil {
			t.Errorf("master's keepalive: %v", err)
		}
		// The worker's own keepalives (every second) count as seen.
		first, _ := m.State("w1")
		for st := first; !st.LastSeen.After(first.LastSeen); st, _ = m.State("w1") {
			if ctx.Err() != nil {
				t.Fatal("the worker's keepalives (created with --keepalive=1) did not move LastSeen")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	if l := worker.Log(); strings.Contains(l, "Traceback") || strings.Contains(l, "Unhandled") {
		t.Errorf("the worker logged an error:\n%s", l)
	}

	t.Run("wrong password", func(t *testing.T) {
		bad := integration.NewPBWorker(t, addr.String(), "w1", "wrong-secret")
		bad.Start()
		for ev := range events {
			if ev.Kind == slave.Refused {
				break
			}
		}
		bad.Stop()
		if !bad.WaitLog("unauthorized login", 10*time.Second) {
			t.Errorf("the refused worker's log does not show the refusal:\n%s", bad.Log())
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
