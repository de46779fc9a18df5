package client

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client/mastertest"
	"github.com/buildslave/buildslave/protocol/wire"
)

// startSlave runs a slave against m until the test ends; wait returns
// Run's result once Run has returned (failing the test after 10 s).
func startSlave(t *testing.T, m *mastertest.Master, cfg Config) (basedir string, wait func() error) {
	t.Helper()
	if cfg.Basedir == "" {
		cfg.Basedir = t.TempDir()
	}
	cfg.Master, cfg.Protocol, cfg.Name = m.Addr(), Msgpack, "bot"
	if cfg.Password == "" {
		cfg.Password = "pw"
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 40*time.Millisecond
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	finished := make(chan struct{})
	go func() {
		runErr = s.Run(ctx)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return cfg.Basedir, func() error {
		t.Helper()
		select {
		case <-finished:
			return runErr
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10 s")
			return nil
		}
	}
}

func TestAttachAndShell(t *testing.T) {
	m := mastertest.New(t, "bot", "pw", false)
	basedir, _ := startSlave(t, m, Config{})
	if err := os.MkdirAll(filepath.Join(basedir, "info"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(basedir, "info", "admin"), []byte("Ada <ada@example.invalid>\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	mc := m.Next(t)
	info := mc.Attach(t, basedir)
	if info["admin"] != "Ada <ada@example.invalid>\n" || info["basedir"] != basedir || info["system"] != "posix" {
		t.Errorf("info %v", info)
	}
	if cmds, _ := info["worker_commands"].(map[string]any); cmds["shell"] != "3.1" {
		t.Errorf("worker_commands %v", info["worker_commands"])
	}
	if env, _ := info["environ"].(map[string]any); len(env) > 1 {
		t.Errorf("environ shares more than HOME: %v", env)
	}

	run := mc.Command(t, "2", "shell", map[string]any{"workdir": filepath.Join(basedir, "hello", "build"),
		"command": "echo hello; echo world", "env": map[string]any{}, "want_stdout": true, "want_stderr": true,
		"logfiles": map[string]any{}, "timeout": 1200, "maxTime": nil, "sigtermTime": nil, "usePTY": false,
		"logEnviron": false, "initial_stdin": nil})
	if run.RC != 0 || run.Stream("stdout") != "hello\nworld\n" || run.Failure != nil {
		t.Errorf("rc %d stdout %q failure %v", run.RC, run.Stream("stdout"), run.Failure)
	}
	if _, ok := run.Values["elapsed"]; !ok {
		t.Error("no elapsed")
	}

	mc.Call(t, "keepalive", nil)
	if _, err := mc.Wire.Call(t.Context(), "frobnicate", nil); !errors.As(err, new(*wire.RemoteError)) {
		t.Errorf("unknown op: err %v, want an exception response", err)
	}
	_, err := mc.Wire.Call(t.Context(), "start_command", map[string]any{"command_id": "3", "command_name": "nope", "args": map[string]any{}})
	if !errors.As(err, new(*wire.RemoteError)) {
		t.Errorf("unknown command: err %v", err)
	}
}

func TestUploadAndDownload(t *testing.T) {
	m := mastertest.New(t, "bot", "pw", false)
	basedir, _ := startSlave(t, m, Config{})
	mc := m.Next(t)
	mc.Attach(t, basedir)

	data := bytes.Repeat([]byte("artifact "), 1000)
	src := filepath.Join(basedir, "hello", "out.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run := mc.Command(t, "up", "uploadFile", map[string]any{"path": src, "blocksize": 4096, "maxsize": nil, "keepstamp": false})
	if run.RC != 0 || !bytes.Equal(run.Bytes("update_upload_file_write"), data) {
		t.Errorf("upload: rc %d, got %d bytes, ops %v", run.RC, len(run.Bytes("update_upload_file_write")), run.Ops)
	}
	if last := run.Ops[len(run.Ops)-1]; last != "update_upload_file_close" {
		t.Errorf("upload ops %v", run.Ops)
	}

	mc.SetDownload(data)
	dst := filepath.Join(basedir, "hello", "sub", "in.bin")
	run = mc.Command(t, "down", "download_file", map[string]any{"path": dst, "blocksize": 1000, "maxsize": nil, "mode": 0o600})
	got, err := os.ReadFile(dst)
	if run.RC != 0 || err != nil || !bytes.Equal(got, data) {
		t.Errorf("download: rc %d, %d bytes, %v", run.RC, len(got), err)
	}
	if strings.Join(run.Ops, ",") != "update_read_file_close" {
		t.Errorf("download ops %v", run.Ops)
	}
}

func TestInterrupt(t *testing.T) {
	m := mastertest.New(t, "bot", "pw", false)
	basedir, _ := startSlave(t, m, Config{})
	mc := m.Next(t)
	mc.Attach(t, basedir)
	mc.Call(t, "start_command", map[string]any{"command_id": "long", "command_name": "shell",
		"args": map[string]any{"workdir": basedir, "command": "echo started; exec sleep 60"}})
	interrupted := false
	run := mc.Collect(t, "long", func(pairs []any) {
		for _, p := range pairs {
			kv := p.([]any)
			if kv[0] == "stdout" && !interrupted {
				interrupted = true
				mc.Call(t, "interrupt_command", map[string]any{"command_id": "long", "why": "stop please"})
			}
		}
	})
	if run.RC != -1 || !strings.Contains(run.Stream("header"), "command interrupted (stop please)") {
		t.Errorf("rc %d header %q", run.RC, run.Stream("header"))
	}
	mc.Call(t, "interrupt_command", map[string]any{"command_id": "long", "why": "again"})
}

func TestReconnectAfterMasterDrops(t *testing.T) {
	m := mastertest.New(t, "bot", "pw", false)
	basedir, _ := startSlave(t, m, Config{})
	mc := m.Next(t)
	mc.Attach(t, basedir)
	mc.Wire.Close()
	mc2 := m.Next(t)
	mc2.Attach(t, basedir)
}

func TestGiveUpAfterRefusals(t *testing.T) {
	m := mastertest.New(t, "bot", "other", false)
	_, wait := startSlave(t, m, Config{MaxRefusals: 3})
	if err := wait(); !errors.Is(err, ErrRefused) {
		t.Errorf("Run = %v, want ErrRefused", err)
	}
	if n := m.Refusals(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
}

func TestShutdownOp(t *testing.T) {
	m := mastertest.New(t, "bot", "pw", false)
	basedir, wait := startSlave(t, m, Config{})
	mc := m.Next(t)
	mc.Attach(t, basedir)
	mc.Call(t, "shutdown", nil)
	if err := wait(); err != nil {
		t.Errorf("Run = %v, want nil after shutdown", err)
	}
}

func TestTLS(t *testing.T) {
	m := mastertest.New(t, "bot", "pw", true)
	pool := x509.NewCertPool()
	pool.AddCert(m.Certificate())
	basedir, _ := startSlave(t, m, Config{TLS: true, RootCAs: pool})
	m.Next(t).Attach(t, basedir)
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Master: "nohostport", Name: "n", Password: "p", Basedir: "/tmp"},
		{Master: "h:1", Name: "a:b", Password: "p", Basedir: "/tmp"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestMasterSentSizesOverLimits: a master asking for a block of 1 TiB or
// a buffer of 1 TiB gets an exception naming the limit, and the slave stays
// attached (it ran out of memory).
func TestMasterSentSizesOverLimits(t *testing.T) {
	m := mastertest.New(t, "bot", "pw", false)
	basedir, _ := startSlave(t, m, Config{})
	mc := m.Next(t)
	mc.Attach(t, basedir)
	_, err := mc.Wire.Call(t.Context(), "start_command", map[string]any{"command_id": "big", "command_name": "upload_file",
		"args": map[string]any{"path": filepath.Join(basedir, "f"), "blocksize": int64(1) << 40, "maxsize": nil}})
	if re := new(wire.RemoteError); !errors.As(err, &re) || !strings.Contains(re.Message, "commands.Limits.BlockSize") {
		t.Errorf("start_command with a 1 TiB blocksize: %v", err)
	}
	_, err = mc.Wire.Call(t.Context(), "set_worker_settings", map[string]any{"args": map[string]any{
		"buffer_size": int64(1) << 40, "buffer_timeout": 5, "newline_re": "\n", "max_line_length": 4096}})
	if re := new(wire.RemoteError); !errors.As(err, &re) || !strings.Contains(re.Message, "commands.Limits.BufferSize") {
		t.Errorf("set_worker_settings with a 1 TiB buffer: %v", err)
	}
	mc.Call(t, "keepalive", nil)
}

// TestRunStopsDuringSilentHandshake: a master that accepts the connection
// and never answers the upgrade (msgpack) or the login (PB) does not hold
// Run after its context ends (over msgpack it held it for the handshake
// timeout, 30 s).
func TestRunStopsDuringSilentHandshake(t *testing.T) {
	for _, protocol := range []string{Msgpack, PB} {
		t.Run(protocol, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := l.Accept()
				if err == nil {
					accepted <- c
				}
			}()
			t.Cleanup(func() { l.Close() })
			s, err := New(Config{Master: l.Addr().String(), Protocol: protocol, Name: "bot", Password: "pw",
				Basedir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			finished := make(chan error, 1)
			go func() { finished <- s.Run(ctx) }()
			deadline := time.After(10 * time.Second)
			select {
			case c := <-accepted:
				defer c.Close()
			case <-deadline:
				t.Fatal("the slave did not connect within 10 s")
			}
			cancel()
			select {
			case err := <-finished:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run = %v, want context.Canceled", err)
				}
			case <-deadline:
				t.Fatal("Run did not return within 10 s of its context's end")
			}
		})
	}
}
