package protocol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/remote"

	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

type master struct {
	h    *Handler
	m    *slave.Manager
	url  string
	logs *testlog.Buffer
}

// newMaster serves a Handler for slaves s1 and s2 (password "pw") on a
// loopback port.
func newMaster(t testing.TB, configure func(*Handler)) *master {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var slaves []*slave.Slave
	for _, name := range []string{"s1", "s2"} {
		s, err := slave.New(name, "pw")
		if err != nil {
			t.Fatal(err)
		}
		slaves = append(slaves, s)
	}
	m, err := slave.NewManager(slave.Config{Logger: log}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Manager: m, Builders: []string{"b1", "b2"}, Logger: log}
	if configure != nil {
		configure(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
		m.Close()
	})
	return &master{h: h, m: m, url: "ws" + strings.TrimPrefix(srv.URL, "http"), logs: logs}
}

func (ms *master) dial(t testing.TB, name, password string) (wire.Transport, error) {
	t.Helper()
	d := &wire.Dialer{}
	return d.Dial(t.Context(), ms.url, name, password)
}

// attach connects a fake slave and waits until the manager gives a build
// on it.
func (ms *master) attach(t testing.TB, name string) (*fakeSlave, *Conn) {
	t.Helper()
	tr, err := ms.dial(t, name, "pw")
	if err != nil {
		t.Fatal(err)
	}
	fs := newFakeSlave(t, tr)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b, err := ms.m.Acquire(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Release)
	return fs, b.Conn().(*Conn)
}

func TestAttachSequence(t *testing.T) {
	ms := newMaster(t, nil)
	fs, c := ms.attach(t, "s1")
	want := []string{"print", "get_worker_info", "set_worker_settings", "start_command mkdir", "print"}
	// The last print may still be on its way when the build is granted.
	var got []string
	for range want {
		got = append(got, <-fs.events)
	}
	if !slices.Equal(got, want) {
		t.Errorf("ops = %q, want %q", got, want)
	}
	fs.mu.Lock()
	mkdirs := fs.mkdirs
	fs.mu.Unlock()
	if !slices.Equal(mkdirs, []any{"/srv/bb/workers/w1/b1", "/srv/bb/workers/w1/b2"}) {
		t.Errorf("mkdir paths = %v, want every builder's", mkdirs)
	}
	info := c.Info()
	if info.Admin != "Your Name Here <admin@youraddress.invalid>" || info.NumCPUs != 2 || info.Version != "3.7.0" ||
		info.Basedir != "/srv/bb/workers/w1" || info.OS != "Debian GNU/Linux 12 (bookworm)" ||
		info.Commands["shell"] != "3.7" || info.Extra["os_id"] != "debian" || info.Host == "" {
		t.Errorf("info = %+v", info)
	}
	if _, ok := info.Extra["environ"]; ok {
		t.Error("the environment was kept")
	}
	if c.Name() != "s1" || !strings.HasPrefix(c.RemoteAddr(), "127.0.0.1:") {
		t.Errorf("name %q, remote %q", c.Name(), c.RemoteAddr())
	}
	if err := c.Keepalive(t.Context()); err != nil {
		t.Error(err)
	}
	var re *wire.RemoteError
	if _, err := fs.w.Call(t.Context(), "frobnicate", nil); !errors.As(err, &re) || !strings.Contains(re.Message, "unknown op") {
		t.Errorf("unknown op from the slave: %v", err)
	}
	if err := c.RequestShutdown(t.Context()); err != nil {
		t.Error(err)
	}
	if got := fs.opsSeen(); got[len(got)-2] != "keepalive" || got[len(got)-1] != "shutdown" {
		t.Errorf("ops = %q", got)
	}
}

func collect(t *testing.T, cmd *remote.Command) []remote.Update {
	t.Helper()
	var us []remote.Update
	for u := range cmd.Updates() {
		us = append(us, u)
	}
	return us
}

func TestShellCommand(t *testing.T) {
	ms := newMaster(t, nil)
	_, c := ms.attach(t, "s1")
	cmd, err := c.Start(t.Context(), remote.Request{Name: "shell", Builder: "b1", Args: map[string]any{"command": "echo hello", "workdir": "/w"}})
	if err != nil {
		t.Fatal(err)
	}
	us := collect(t, cmd)
	if err := cmd.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(us))
	for i, u := range us {
		keys[i] = u.Key
	}
	if !slices.Equal(keys, []string{"header", "stdout", "rc", "elapsed"}) || us[1].Text != "hello\n" || us[2].RC != 0 || us[3].Value != 0.01 {
		t.Errorf("updates = %+v", us)
	}

	cmd, err = c.Start(t.Context(), remote.Request{Name: "shell", Args: map[string]any{"command": "fail"}})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, cmd)
	var ce *remote.CommandError
	if err := cmd.Wait(t.Context()); !errors.As(err, &ce) || ce.Text != "boom" {
		t.Errorf("failed command: %v", err)
	}
}

func TestInterrupt(t *testing.T) {
	ms := newMaster(t, nil)
	_, c := ms.attach(t, "s1")
	cmd, err := c.Start(t.Context(), remote.Request{Name: "shell", Builder: "b1", Args: map[string]any{"command": "wait"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Interrupt(t.Context(), "stop"); err != nil {
		t.Fatal(err)
	}
	us := collect(t, cmd)
	if len(us) == 0 || us[0].Key != "rc" || us[0].RC != -1 {
		t.Errorf("updates after interrupt = %+v", us)
	}
	<-cmd.Done()
	if err := cmd.Interrupt(t.Context(), "again"); err == nil {
		t.Error("interrupting a finished command succeeded")
	}
}

// uploadSink records an upload, its times and its closing.
type uploadSink struct {
	bytes.Buffer
	atime, mtime time.Time
	closed       bool
}

func (u *uploadSink) SetTimes(a, m time.Time) error { u.atime, u.mtime = a, m; return nil }
func (u *uploadSink) Close() error                  { u.closed = true; return nil }

func TestUploadAndDownload(t *testing.T) {
	ms := newMaster(t, nil)
	fs, c := ms.attach(t, "s1")
	content := []byte("0123456789abcdef")
	fs.mu.Lock()
	fs.files["/w/out.txt"] = content
	fs.mu.Unlock()

	sink := &uploadSink{}
	cmd, err := c.Start(t.Context(), remote.Request{Name: "upload_file", Upload: sink,
		Args: map[string]any{"path": "/w/out.txt", "maxsize": nil, "blocksize": 4, "keepstamp": true}})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, cmd)
	if err := cmd.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), content) || !sink.closed || sink.mtime.Unix() != 1.6e9 || sink.atime.Unix() != 1.5e9 {
		t.Errorf("upload: %q closed=%v times %v %v", sink.Bytes(), sink.closed, sink.atime, sink.mtime)
	}

	// maxsize is enforced: the slave's write beyond it fails the command.
	small := &bytes.Buffer{}
	cmd, err = c.Start(t.Context(), remote.Request{Name: "upload_file", Upload: small, Args: map[string]any{"path": "/w/out.txt", "maxsize": 6}})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, cmd)
	var ce *remote.CommandError
	if err := cmd.Wait(t.Context()); !errors.As(err, &ce) || !strings.Contains(ce.Text, "maximum upload size") {
		t.Errorf("oversized upload: %v", err)
	}
	if small.String() != "012345" {
		t.Errorf("oversized upload wrote %q", small)
	}

	cmd, err = c.Start(t.Context(), remote.Request{Name: "download_file", Download: strings.NewReader("downloaded content"),
		Args: map[string]any{"path": "/w/in.txt", "maxsize": nil, "blocksize": 5, "mode": nil}})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, cmd)
	if err := cmd.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	got := string(fs.files["/w/in.txt"])
	fs.mu.Unlock()
	if got != "downloaded content" {
		t.Errorf("download gave %q", got)
	}

	for _, req := range []remote.Request{{Name: "upload_file"}, {Name: "upload_directory"}, {Name: "download_file"},
		{Name: "upload_file", Upload: small, Args: map[string]any{"maxsize": "big"}}} {
		if _, err := c.Start(t.Context(), req); err == nil {
			t.Errorf("Start(%+v) succeeded", req)
		}
	}
}

func TestAuthentication(t *testing.T) {
	ms := newMaster(t, nil)
	for i, tc := range []struct {
		name, header string
		status       int
		logged       string
	}{
		{"no header", "", http.StatusUnauthorized, "no Authorization header"},
		{"bad header", "Basic !!!", http.StatusBadRequest, "unparsable Authorization header"},
		{"not basic", "Bearer xyz", http.StatusBadRequest, "unparsable Authorization header"},
		{"wrong password", wire.BasicAuth("s1", "secret-wrong"), http.StatusUnauthorized, "wrong password"},
		{"unknown name", wire.BasicAuth("nobody", "pw"), http.StatusUnauthorized, "unknown slave"},
	} {
		// Each from an address of its own: a second refusal from one address would be summarised.
		client := clientFrom(t, fmt.Sprintf("127.0.0.%d", 10+i))
		t.Run(tc.name, func(t *testing.T) {
			before := len(ms.logs.Matching(tc.logged))
			req, _ := http.NewRequest("GET", "http"+strings.TrimPrefix(ms.url, "ws")+"/", nil)
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "e3hQY4vLstyJw0uMsXOlAQ==")
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status || !resp.Close {
				t.Errorf("status %d, closing %v; want %d, closing", resp.StatusCode, resp.Close, tc.status)
			}
			if n := len(ms.logs.Matching(tc.logged)) - before; n != 1 {
				t.Errorf("%d log lines with %q, want 1", n, tc.logged)
			}
		})
	}
	if lines := ms.logs.Matching("secret-wrong"); len(lines) != 0 {
		t.Errorf("password logged: %q", lines)
	}
	if _, err := ms.dial(t, "s1", "nope"); err == nil || err.(*wire.HandshakeError).StatusCode != 401 {
		t.Errorf("dial with a wrong password: %v", err)
	}
}

// TestBadInput sends each kind of bad input on an attached connection: the
// connection is dropped with one log line and the other slave stays.
func TestBadInput(t *testing.T) {
	frame := func(op string, seq int64, fields map[string]any) []byte {
		b, err := wire.AppendMessage(nil, op, seq, fields)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, p := range map[string][]byte{
		"oversized frame":   bytes.Repeat([]byte{0xc0}, 5000),
		"malformed msgpack": {0x82, 0xa2, 'o', 'p'},
		"wrong field type":  frame("update", 0, map[string]any{"command_id": 7, "args": []any{}}),
		"unknown command":   frame("update", 0, map[string]any{"command_id": "nope", "args": []any{}}),
		"seq out of order":  frame("update", 5, map[string]any{"command_id": "nope", "args": []any{}}),
		"no command_id":     frame("complete", 0, nil),
	} {
		t.Run(name, func(t *testing.T) {
			ms := newMaster(t, func(h *Handler) { h.WebSocket.MaxMessageSize = 4096 })
			_, other := ms.attach(t, "s2")
			fs, c := ms.attach(t, "s1")
			// The fake has made no requests of its own: seq 0 is next.
			if err := fs.tr.WriteMessage(p); err != nil {
				t.Fatal(err)
			}
			<-c.Context().Done()
			if err := other.Keepalive(t.Context()); err != nil {
				t.Errorf("the other slave suffered: %v", err)
			}
			ms.h.Close() // waits for the connections' goroutines, which log before they end
			if n := len(ms.logs.Matching("slave sent bad input")); n != 1 {
				t.Errorf("%d bad-input log lines, want 1:\n%s", n, ms.logs.Matching(""))
			}
		})
	}
}
