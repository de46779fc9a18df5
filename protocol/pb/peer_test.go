package pb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/slave"
)

// Test peers for the server: a well-behaved slave on our client (Connect,
// Login) and a raw one that writes whatever bytes a test wants.

// peerTimeout bounds every wait of a test peer.
const peerTimeout = 10 * time.Second

// testMaster is a Server with a slave.Manager on a loopback port, logging
// into a buffer. Its slaves are good1, good2, good3 and bad, each with the
// password "pw-" + its name.
type testMaster struct {
	t    testing.TB
	m    *slave.Manager
	s    *Server
	addr string
	logs *testlog.Buffer
}

func newTestMaster(t testing.TB, configure func(*Server)) *testMaster {
	t.Helper()
	return newTestMasterOf(t, []string{"good1", "good2", "good3", "bad"}, configure)
}

// newTestMasterOf is newTestMaster with the slaves named.
func newTestMasterOf(t testing.TB, names []string, configure func(*Server)) *testMaster {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var slaves []*slave.Slave
	for _, name := range names {
		s, err := slave.New(name, "pw-"+name)
		if err != nil {
			t.Fatal(err)
		}
		slaves = append(slaves, s)
	}
	m, err := slave.NewManager(slave.Config{Logger: log}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Manager: m, Builders: []string{"hello"}, Logger: log}
	if configure != nil {
		configure(s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Close()
		<-served
		m.Close()
	})
	return &testMaster{t: t, m: m, s: s, addr: l.Addr().String(), logs: logs}
}

// waitLog waits for a log line holding every one of subs and returns it.
// Quotes in subs match the escaped quotes of the log's quoted values.
func (tm *testMaster) waitLog(subs ...string) string {
	tm.t.Helper()
	subs = slices.Clone(subs)
	for i, s := range subs {
		subs[i] = strings.ReplaceAll(s, `"`, `\"`)
	}
	deadline := time.Now().Add(peerTimeout)
	for {
		if lines := tm.logs.Matching(subs...); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("no log line with %q; the log:\n%s", subs, tm.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goodSlave is a slave on our client: it answers the master's print,
// getWorkerInfo and setBuilderList.
type goodSlave struct {
	name        string
	b           *Broker
	perspective *Ref
	served      chan error
}

// goodMind is a good slave's bot object.
type goodMind struct{ name string }

func (m goodMind) Call(method string, args Tuple, _ map[string]any) (any, error) {
	switch method {
	case "print":
		return nil, nil
	case "getWorkerInfo":
		return map[string]any{"admin": "tests", "version": "test", "basedir": "/srv/" + m.name, "numcpus": 1,
			"worker_commands": map[string]any{"shell": "3.3"}}, nil
	case "setBuilderList":
		builders := map[string]any{}
		for _, b := range AsList(argAt(args, 0)) {
			name, _ := Plain(argAt(AsList(b), 0)).(string)
			builders[name] = goodBuilder{m.name, name}
		}
		return builders, nil
	}
	return nil, noSuchMethod(method)
}

// goodBuilder is a good slave's builder: it starts nothing.
type goodBuilder struct{ slave, name string }

func (goodBuilder) Call(method string, _ Tuple, _ map[string]any) (any, error) {
	return nil, noSuchMethod(method)
}

// attach attaches a good slave, and fails the test if it is not attached
// within peerTimeout.
func (tm *testMaster) attach(name string) *goodSlave {
	tm.t.Helper()
	g, err := tm.tryAttach(name, "pw-"+name)
	if err != nil {
		tm.t.Fatalf("%s did not attach: %v\nthe log:\n%s", name, err, tm.logs.String())
	}
	return g
}

func (tm *testMaster) tryAttach(name, password string) (*goodSlave, error) {
	nc, err := net.DialTimeout("tcp", tm.addr, peerTimeout)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(peerTimeout))
	b, err := Connect(nc, BrokerConfig{})
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	g := &goodSlave{name: name, b: b, served: make(chan error, 1)}
	go func() { g.served <- b.Serve() }()
	tm.t.Cleanup(g.close)
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	g.perspective, err = b.Login(ctx, name, password, goodMind{name})
	if err != nil {
		return nil, err
	}
	return g, nil
}

func (g *goodSlave) close() {
	g.b.Close()
	<-g.served
}

// alive checks that the slave's connection works both ways: the master
// answers its keepalive, and the manager has it attached.
func (tm *testMaster) alive(g *goodSlave) {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	if _, err := g.perspective.Call(ctx, "keepalive", nil, nil); err != nil {
		tm.t.Errorf("%s: keepalive: %v", g.name, err)
	}
	if st, _ := tm.m.State(g.name); !st.Attached {
		tm.t.Errorf("%s is not attached", g.name)
	}
}

// rawPeer is a PB client that sends what a test tells it: raw bytes, or
// messages it encodes, and reads what the master sends.
type rawPeer struct {
	t     testing.TB
	nc    net.Conn
	dec   *decoder
	mu    sync.Mutex // serialises writes
	lastR int64      // our last request id
}

// dialRaw connects and runs the handshake.
func (tm *testMaster) dialRaw() *rawPeer {
	tm.t.Helper()
	p := tm.dialRawNoHandshake()
	p.handshake()
	return p
}

// handshake runs the client's side of the handshake: the master's dialect
// offer, our choice of "pb", and both versions.
func (p *rawPeer) handshake() {
	p.t.Helper()
	p.deadline()
	p.dec.begin()
	if n, typ, err := p.dec.token(); err != nil || typ != tokList || n != 2 {
		p.t.Fatalf("dialect offer: %d 0x%02x %v", n, typ, err)
	}
	for range 2 {
		if _, err := p.dec.atom(); err != nil {
			p.t.Fatalf("dialect offer: %v", err)
		}
	}
	w := writer{}
	w.atom("pb")
	p.write(w.b)
	p.send("version", 6)
	if msg, err := p.read(); err != nil || checkVersion(msg) != nil {
		p.t.Fatalf("version: %v %v", msg, err)
	}
}

// newRawPeer is a raw peer on nc, before the handshake.
func newRawPeer(t testing.TB, nc net.Conn) *rawPeer {
	return &rawPeer{t: t, nc: nc, dec: newGoldenDecoder(nc, Limits{})}
}

func (tm *testMaster) dialRawNoHandshake() *rawPeer {
	tm.t.Helper()
	nc, err := net.DialTimeout("tcp", tm.addr, peerTimeout)
	if err != nil {
		tm.t.Fatal(err)
	}
	tm.t.Cleanup(func() { nc.Close() })
	return newRawPeer(tm.t, nc)
}

// addr is the peer's address as the master sees it.
func (p *rawPeer) addr() string { return p.nc.LocalAddr().String() }

func (p *rawPeer) deadline() { p.nc.SetDeadline(time.Now().Add(peerTimeout)) }

// write sends raw bytes; a write the master refuses by closing is not an
// error (the test checks what the master did).
func (p *rawPeer) write(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nc.SetWriteDeadline(time.Now().Add(peerTimeout))
	p.nc.Write(b)
}

// encodeItems encodes a message: atoms as []byte or string command names,
// other items as jelly (goldenObject{N} is our object number N).
func encodeItems(items ...any) []byte {
	e := encoder{writer: writer{vocab: true}, reg: goldenRegistrar{}}
	e.list(len(items))
	for _, v := range items {
		if s, ok := v.(string); ok {
			e.atom(s)
			continue
		}
		if err := e.value(v); err != nil {
			panic(err)
		}
	}
	return e.b
}

// send encodes a message (see encodeItems) and writes it.
func (p *rawPeer) send(items ...any) { p.write(encodeItems(items...)) }

// call sends a call of method on target ("root" or an object number) and
// returns its request id.
func (p *rawPeer) call(target any, method string, args ...any) int64 {
	p.mu.Lock()
	p.lastR++
	id := p.lastR
	p.mu.Unlock()
	if args == nil {
		args = []any{}
	}
	p.send("message", id, target, method, 1, Tuple(args), map[string]any{})
	return id
}

// read reads the master's next message.
func (p *rawPeer) read() ([]any, error) {
	p.deadline()
	return p.dec.message()
}

// answer reads messages until the answer (or error) to request id, and
// returns its value; calls from the master meanwhile are answered by
// serve, if given, and otherwise fail the test.
func (p *rawPeer) answer(id int64, serve func(msg []any) bool) (any, error) {
	p.t.Helper()
	for {
		msg, err := p.read()
		if err != nil {
			return nil, err
		}
		switch text(msg[0]) {
		case "answer":
			if msg[1] == id {
				return msg[2], nil
			}
		case "error":
			if msg[1] == id {
				return nil, msg[2].(*RemoteError)
			}
		case "message":
			if serve != nil && serve(msg) {
				continue
			}
			p.t.Fatalf("unexpected call from the master: %v", msg)
		}
	}
}

// login logs in as name and returns the challenge and the challenger's number.
func (p *rawPeer) login(name string) ([]byte, int64) {
	p.t.Helper()
	v, err := p.answer(p.call("root", "login", []byte(name)), nil)
	l := AsList(v)
	if err != nil || len(l) != 2 {
		p.t.Fatalf("login answered %v, %v", v, err)
	}
	return l[0].([]byte), l[1].(*Ref).id
}

// respond answers the challenge with password and our object 1 as the
// mind, and returns the request id.
func (p *rawPeer) respond(challenge []byte, challenger int64, password string) int64 {
	return p.call(challenger, "respond", Respond(challenge, password), goldenObject{1})
}

// attach logs in as name and answers the attach sequence as a slave does
// (setBuilderList with our object 2 for every builder); it returns the
// perspective's number.
func (p *rawPeer) attach(name string) int64 {
	p.t.Helper()
	challenge, challenger := p.login(name)
	v, err := p.answer(p.respond(challenge, challenger, "pw-"+name), p.serveAttach)
	ref, ok := v.(*Ref)
	if err != nil || !ok {
		p.t.Fatalf("respond answered %v, %v", v, err)
	}
	return ref.id
}

// serveAttach answers the master's calls of the attach sequence.
func (p *rawPeer) serveAttach(msg []any) bool {
	if len(msg) != 7 {
		return false
	}
	var v any
	switch text(msg[3]) {
	case "print":
	case "getWorkerInfo":
		v = map[string]any{"version": "raw", "numcpus": 1}
	case "setBuilderList":
		builders := map[string]any{}
		for _, b := range AsList(msg[5].(Tuple)[0]) {
			builders[text(AsList(b)[0])] = goldenObject{2}
		}
		v = builders
	default:
		return false
	}
	p.send("answer", msg[1], v)
	return true
}

// open reports whether the master has not closed the connection (it
// must have nothing to read meanwhile).
func (p *rawPeer) open() bool {
	p.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := p.nc.Read(b[:])
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// closed waits for the master to close the connection, reading (and
// ignoring) what it sends until then.
func (p *rawPeer) closed() {
	p.t.Helper()
	p.deadline()
	buf := make([]byte, 4096)
	for {
		_, err := p.nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			p.t.Fatalf("the master did not close the connection within %v", peerTimeout)
		}
		if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
			p.t.Logf("connection ended with %v", err)
		}
		return
	}
}

// warningsAbout returns the log's warnings and errors about a remote
// address.
func (tm *testMaster) warningsAbout(addr string) []string {
	var lines []string
	for _, l := range tm.logs.Matching(fmt.Sprintf("remote=%s ", addr)) {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			lines = append(lines, l)
		}
	}
	return lines
}
