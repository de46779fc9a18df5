package wire

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
)

// rawPeer drives the far end of a pipe message by message.
type rawPeer struct {
	t  *testing.T
	tr Transport
}

func (p rawPeer) send(op string, seq int64, fields map[string]any) {
	p.t.Helper()
	b, err := AppendMessage(nil, op, seq, fields)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.tr.WriteMessage(b); err != nil {
		p.t.Fatal(err)
	}
}

func (p rawPeer) recv() Message {
	p.t.Helper()
	b, _, err := p.tr.ReadMessage(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	m, err := DecodeMessage(b)
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

// serve starts c.Serve and returns a function waiting for its result.
func serve(c *Conn) func() error {
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = c.Serve() })
	return func() error { wg.Wait(); return err }
}

func echoHandler(_ context.Context, req Message) (any, error) {
	switch req.Op() {
	case "echo":
		return req["value"], nil
	case "fail":
		return nil, errors.New("it failed")
	case "bad":
		_, err := req.Int("value")
		return nil, err
	}
	return nil, UnknownOp(req.Op())
}

func TestCallsBothWays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe()
		ca, cb := NewConn(a, echoHandler), NewConn(b, echoHandler)
		waitA, waitB := serve(ca), serve(cb)
		ctx := t.Context()
		for i := range 3 {
			got, err := ca.Call(ctx, "echo", map[string]any{"value": "x"})
			if err != nil || got != "x" {
				t.Fatalf("call %d = %v, %v", i, got, err)
			}
		}
		if got, err := cb.Call(ctx, "echo", map[string]any{"value": []byte{1}}); err != nil || string(got.([]byte)) != "\x01" {
			t.Fatalf("b's call = %v, %v", got, err)
		}
		_, err := ca.Call(ctx, "fail", nil)
		var re *RemoteError
		if !errors.As(err, &re) || re.Message != "it failed" {
			t.Errorf("fail call error = %v", err)
		}
		_, err = ca.Call(ctx, "frobnicate", nil)
		if !errors.As(err, &re) || !strings.Contains(re.Message, `unknown op "frobnicate"`) {
			t.Errorf("unknown op error = %v", err)
		}
		ca.Close()
		if err := waitA(); !errors.Is(err, ErrClosed) {
			t.Errorf("a's Serve = %v, want ErrClosed", err)
		}
		if err := waitB(); err == nil || errors.Is(err, ErrClosed) {
			t.Errorf("b's Serve = %v, want a read error", err)
		}
		if _, err := cb.Call(ctx, "echo", nil); err == nil {
			t.Error("call on a closed connection succeeded")
		}
	})
}

func TestOutOfOrderResponsesAndPendingFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe()
		c := NewConn(a, echoHandler)
		wait := serve(c)
		peer := rawPeer{t, b}
		results := make([]any, 3)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() { results[i], errs[i] = c.Call(t.Context(), "print", map[string]any{"message": i}) })
			synctest.Wait() // requests go out in a known order
		}
		r0, r1, r2 := peer.recv(), peer.recv(), peer.recv()
		if r0.Seq() != 0 || r1.Seq() != 1 || r2.Seq() != 2 {
			t.Fatalf("seq numbers %d %d %d", r0.Seq(), r1.Seq(), r2.Seq())
		}
		// An update request arrives between the responses, which come in reverse.
		peer.send("response", 1, map[string]any{"result": "one"})
		peer.send("echo", 0, map[string]any{"value": "u"})
		peer.send("response", 0, map[string]any{"result": "zero"})
		if m := peer.recv(); m.Op() != "response" || m.Seq() != 0 || m["result"] != "u" {
			t.Errorf("answer to the peer's request = %v", m)
		}
		synctest.Wait()
		if results[0] != "zero" || results[1] != "one" {
			t.Errorf("results %v, errors %v", results, errs)
		}
		b.Close() // the third call is still pending: it fails at once
		wg.Wait()
		if errs[2] == nil {
			t.Error("pending call did not fail on disconnect")
		}
		if err := wait(); err == nil {
			t.Error("Serve returned nil")
		}
	})
}

func TestPeerMisbehaves(t *testing.T) {
	for name, tc := range map[string]func(p rawPeer){
		"request out of order":  func(p rawPeer) { p.send("echo", 1, nil) },
		"response never asked":  func(p rawPeer) { p.send("response", 0, map[string]any{"result": nil}) },
		"malformed msgpack":     func(p rawPeer) { p.tr.WriteMessage([]byte{0x81, 0xa1}) },
		"not a message":         func(p rawPeer) { p.tr.WriteMessage([]byte{0x90}) },
		"wrong field type":      func(p rawPeer) { p.send("bad", 0, map[string]any{"value": "x"}) },
		"second request reuses": func(p rawPeer) { p.send("echo", 0, nil); p.recv(); p.send("echo", 0, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, b := Pipe()
				c := NewConn(a, echoHandler)
				wait := serve(c)
				tc(rawPeer{t, b})
				if err := wait(); !errors.Is(err, ErrMalformed) {
					t.Errorf("Serve = %v, want ErrMalformed", err)
				}
				if !errors.Is(context.Cause(c.Context()), ErrMalformed) {
					t.Errorf("cause = %v", context.Cause(c.Context()))
				}
			})
		})
	}
}

func TestLateResponseIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe()
		c := NewConn(a, echoHandler)
		wait := serve(c)
		peer := rawPeer{t, b}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := c.Call(ctx, "print", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call = %v, want deadline exceeded", err)
		}
		peer.recv()
		peer.send("response", 0, map[string]any{"result": nil})
		peer.send("echo", 0, map[string]any{"value": 1})
		if m := peer.recv(); m["result"] != int64(1) {
			t.Errorf("connection did not go on after a late response: %v", m)
		}
		c.Close()
		wait()
	})
}

func TestUnencodableResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe()
		c := NewConn(a, func(context.Context, Message) (any, error) { return struct{}{}, nil })
		wait := serve(c)
		peer := rawPeer{t, b}
		peer.send("x", 0, nil)
		if m := peer.recv(); m["is_exception"] != true || !strings.Contains(m["result"].(string), "cannot encode") {
			t.Errorf("response = %v", m)
		}
		c.Close()
		wait()
	})
}

// TestWebSocket runs the multiplexer over real WebSockets on loopback: text
// frames are ignored and a frame over the size limit ends the connection.
func TestWebSocket(t *testing.T) {
	served := make(chan error, 1)
	up := &Upgrader{WebSocketConfig{MaxMessageSize: 1000}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != BasicAuth("s1", "pw") {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		tr, err := up.Upgrade(w, r)
		if err != nil {
			served <- err
			return
		}
		served <- NewConn(tr, echoHandler).Serve()
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	d := &Dialer{}
	if _, err := d.Dial(t.Context(), url, "s1", "wrong"); err == nil || err.(*HandshakeError).StatusCode != 401 {
		t.Fatalf("dial with a wrong password = %v", err)
	}
	tr, err := d.Dial(t.Context(), url, "s1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	ws := tr.(*wsTransport).ws
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	c := NewConn(tr, echoHandler)
	wait := serve(c)
	if got, err := c.Call(t.Context(), "echo", map[string]any{"value": "v"}); err != nil || got != "v" {
		t.Fatalf("call = %v, %v", got, err)
	}
	if !strings.HasPrefix(c.RemoteAddr(), "127.0.0.1:") {
		t.Errorf("RemoteAddr = %q", c.RemoteAddr())
	}
	if _, err := c.Call(t.Context(), "echo", map[string]any{"value": strings.Repeat("x", 2000)}); err == nil {
		t.Error("oversized call succeeded")
	}
	if err := <-served; !errors.Is(err, ErrTooLarge) {
		t.Errorf("server's Serve = %v, want ErrTooLarge", err)
	}
	if err := wait(); err == nil {
		t.Error("client's Serve returned nil")
	}
}

// TestLeadReadsWhileNothingServes runs calls inside Lead, where no Serve
// reads: each reads until its own answer and handles the peer's requests
// meanwhile, concurrent calls all get their answers, Wait returns once a
// request of the peer closed its channel, the peer's requests wait for
// Serve once Lead returned, and a call whose context ends while it reads
// closes the connection with the context's cause.
func TestLeadReadsWhileNothingServes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe()
		finished := make(chan struct{})
		ca := NewConn(a, func(ctx context.Context, req Message) (any, error) {
			if req.Op() == "finish" {
				close(finished)
				return nil, nil
			}
			return echoHandler(ctx, req)
		})
		cb := NewConn(b, echoHandler)
		waitB := serve(cb)
		call := func(c *Conn, v string) {
			if got, err := c.Call(t.Context(), "echo", map[string]any{"value": v}); err != nil || got != v {
				t.Errorf("call %q = %v, %v", v, got, err)
			}
		}
		ca.Lead(func() {
			call(ca, "x")
			var wg sync.WaitGroup
			wg.Go(func() { call(cb, "from b") }) // answered by a call of ca reading
			for _, v := range []string{"y", "z"} {
				wg.Go(func() { call(ca, v) })
			}
			call(ca, "w")
			wg.Go(func() { cb.Call(t.Context(), "finish", nil) })
			if err := ca.Wait(t.Context(), finished); err != nil {
				t.Errorf("Wait = %v", err)
			}
			wg.Wait()
		})
		// Nobody reads between Lead and Serve: the peer's call waits.
		answered := make(chan struct{})
		go func() {
			call(cb, "later")
			close(answered)
		}()
		synctest.Wait()
		select {
		case <-answered:
			t.Fatal("a request was answered with nobody serving")
		default:
		}
		waitA := serve(ca)
		<-answered
		ca.Close()
		waitA()
		waitB()

		// A call reading in Lead whose context ends closes the connection.
		a, b = Pipe()
		ca = NewConn(a, echoHandler)
		defer b.Close()
		var err error
		ca.Lead(func() {
			ctx, cancel := context.WithTimeoutCause(t.Context(), time.Second, errors.New("step timed out"))
			defer cancel()
			_, err = ca.Call(ctx, "echo", nil) // b never answers
		})
		if err == nil || err.Error() != "step timed out" {
			t.Fatalf("call past its deadline = %v", err)
		}
		if cause := context.Cause(ca.Context()); cause == nil || cause.Error() != "step timed out" {
			t.Fatalf("connection's cause = %v", cause)
		}
	})
}
