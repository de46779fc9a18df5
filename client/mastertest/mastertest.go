// Package mastertest is a minimal Buildbot master on 127.0.0.1 for testing slaves, built on protocol/wire.
//
// It accepts WebSocket upgrades with HTTP Basic auth like a stock master
// (401 for wrong credentials), hands each attached connection to the test
// as a [Conn], answers the slave's requests, and plays the stock attach
// sequence and remote commands on request.
package mastertest

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/wire"
)

// Timeout bounds every wait of this package.
const Timeout = 20 * time.Second

// Master accepts one slave name and password.
type Master struct {
	srv      *httptest.Server
	name     string
	password string
	conns    chan *Conn
	wg       sync.WaitGroup

	mu      sync.Mutex
	refused int
	served  []*Conn // every connection upgraded, for Close
}

// New starts a master on 127.0.0.1 that accepts name with password (over
// TLS with a self-signed certificate if tls is set); it stops when the test
// ends.
func New(t testing.TB, name, password string, tls bool) *Master {
	m := &Master{name: name, password: password, conns: make(chan *Conn, 16)}
	h := http.HandlerFunc(m.serveHTTP)
	if tls {
		m.srv = httptest.NewTLSServer(h)
	} else {
		m.srv = httptest.NewServer(h)
	}
	t.Cleanup(m.Close)
	return m
}

// Close drops every slave connection and stops the master, as a master
// that goes away does; the test's end calls it too.
func (m *Master) Close() {
	m.srv.CloseClientConnections()
	m.srv.Close()
	m.mu.Lock()
	served := m.served
	m.mu.Unlock()
	for _, c := range served {
		c.Wire.Close()
	}
	m.wg.Wait()
}

// Addr is the master's host:port.
func (m *Master) Addr() string { return m.srv.Listener.Addr().String() }

// Certificate is the TLS master's certificate (nil without TLS).
func (m *Master) Certificate() *x509.Certificate { return m.srv.Certificate() }

// Refusals is how many upgrade requests were refused with 401.
func (m *Master) Refusals() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refused
}

func (m *Master) serveHTTP(w http.ResponseWriter, r *http.Request) {
	name, pw, ok := r.BasicAuth()
	if !ok || name != m.name || pw != m.password {
		m.mu.Lock()
		m.refused++
		m.mu.Unlock()
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var up wire.Upgrader
	tr, err := up.Upgrade(w, r)
	if err != nil {
		return // Upgrade has answered the client
	}
	c := &Conn{events: make(chan wire.Message, 4096)}
	c.Wire = wire.NewConn(tr, c.handle)
	m.mu.Lock()
	m.served = append(m.served, c)
	m.mu.Unlock()
	m.wg.Go(func() { _ = c.Wire.Serve() })
	m.conns <- c
}

// Next waits for the next slave connection.
func (m *Master) Next(t testing.TB) *Conn {
	t.Helper()
	select {
	case c := <-m.conns:
		return c
	case <-time.After(Timeout):
		t.Fatalf("no slave connected within %v", Timeout)
		return nil
	}
}

// Conn is one slave connection as the master sees it.
type Conn struct {
	Wire   *wire.Conn
	events chan wire.Message // the slave's requests other than update_read_file

	mu       sync.Mutex
	download *bytes.Reader
}

// SetDownload sets the data served to the slave's update_read_file requests.
func (c *Conn) SetDownload(data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.download = bytes.NewReader(data)
}

func (c *Conn) handle(_ context.Context, req wire.Message) (any, error) {
	if req.Op() == "update_read_file" {
		n, err := req.Int("length")
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		buf := make([]byte, n)
		k, _ := c.download.Read(buf)
		return buf[:k], nil
	}
	c.events <- req
	return nil, nil
}

// Call sends a request to the slave and returns its result, failing the
// test on an error.
func (c *Conn) Call(t testing.TB, op string, fields map[string]any) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	res, err := c.Wire.Call(ctx, op, fields)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	return res
}

// Attach plays a stock master's attach sequence (print, get_worker_info,
// set_worker_settings with a 10 ms buffer_timeout, listdir of basedir,
// mkdir of basedir/hello, print) and returns the slave's info.
func (c *Conn) Attach(t testing.TB, basedir string) map[string]any {
	t.Helper()
	c.Call(t, "print", map[string]any{"message": "attached"})
	info, ok := c.Call(t, "get_worker_info", nil).(map[string]any)
	if !ok {
		t.Fatal("get_worker_info answered no map")
	}
	c.Call(t, "set_worker_settings", map[string]any{"args": map[string]any{
		"newline_re": `(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)`, "max_line_length": 4096,
		"buffer_timeout": 0.01, "buffer_size": 65536}})
	if run := c.Command(t, "attach-listdir", "listdir", map[string]any{"path": basedir}); run.RC != 0 || run.Values["files"] == nil {
		t.Fatalf("listdir: rc %d values %v", run.RC, run.Values)
	}
	if run := c.Command(t, "attach-mkdir", "mkdir", map[string]any{"paths": []any{basedir + "/hello"}}); run.RC != 0 {
		t.Fatalf("mkdir: rc %d", run.RC)
	}
	c.Call(t, "print", map[string]any{"message": "attached"})
	return info
}

// Run is what one command reported.
type Run struct {
	Streams map[string]*strings.Builder // stdout, stderr, header
	Values  map[string]any              // other update keys (last value); bytes written per transfer op
	RC      int                         // -999 if no rc came
	Failure any                         // the complete message's args
	Ops     []string                    // requests other than update and complete, in order
}

// Stream returns the text of stdout, stderr or header.
func (r *Run) Stream(key string) string {
	if r.Streams[key] == nil {
		return ""
	}
	return r.Streams[key].String()
}

// Bytes returns the data the slave sent with op (update_upload_file_write
// or update_upload_directory_write).
func (r *Run) Bytes(op string) []byte {
	b, _ := r.Values[op].([]byte)
	return b
}

// Command starts a command and collects its reports until it completes.
func (c *Conn) Command(t testing.TB, id, name string, args map[string]any) *Run {
	t.Helper()
	c.Call(t, "start_command", map[string]any{"command_id": id, "command_name": name, "args": args, "builder_name": "hello"})
	return c.Collect(t, id, nil)
}

// Collect gathers the reports of the command id until it completes;
// onUpdate, if not nil, sees each update's pairs as they come.
func (c *Conn) Collect(t testing.TB, id string, onUpdate func(pairs []any)) *Run {
	t.Helper()
	run := &Run{Streams: map[string]*strings.Builder{}, Values: map[string]any{}, RC: -999}
	timeout := time.After(Timeout)
	for {
		var ev wire.Message
		select {
		case ev = <-c.events:
		case <-timeout:
			t.Fatalf("command %s did not complete; so far %+v", id, run)
		}
		if got, _ := ev.String("command_id"); got != id {
			t.Fatalf("event for command %q while waiting for %q: %v", got, id, ev)
		}
		switch ev.Op() {
		case "update":
			pairs, err := ev.List("args")
			if err != nil {
				t.Fatal(err)
			}
			run.add(pairs)
			if onUpdate != nil {
				onUpdate(pairs)
			}
		case "complete":
			run.Failure = ev["args"]
			return run
		default:
			run.Ops = append(run.Ops, ev.Op())
			if b, err := ev.Bytes("args"); err == nil {
				run.Values[ev.Op()] = append(run.Bytes(ev.Op()), b...)
			}
		}
	}
}

func (r *Run) add(pairs []any) {
	for _, p := range pairs {
		kv, _ := p.([]any)
		if len(kv) != 2 {
			continue
		}
		switch key, _ := kv[0].(string); key {
		case "stdout", "stderr", "header":
			if r.Streams[key] == nil {
				r.Streams[key] = &strings.Builder{}
			}
			if lines, ok := kv[1].([]any); ok && len(lines) == 3 {
				text, _ := lines[0].(string)
				r.Streams[key].WriteString(text)
			}
		case "rc":
			rc, _ := wire.AsInt(kv[1])
			r.RC = int(rc)
		default:
			r.Values[key] = kv[1]
		}
	}
}
