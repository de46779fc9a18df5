package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/deadlinetest"
	"github.com/buildslave/buildslave/internal/stacks"
	"github.com/buildslave/buildslave/internal/tcppair"
)

// countingListener counts the writes to the connections it accepts.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return countingConn{c, l.writes}, err
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestLeadSendsHeldWritesTogether runs a master's Lead over a real
// WebSocket: three requests sent before their answers are waited for
// reach the socket in one write, with the answer to the upgrade; the answer to a request the peer sent
// meanwhile waits for the master's next request; a Call made by another
// goroutine while the lead waits on the socket goes out at once (or the
// lead would wait for an answer to a request never sent); after Lead,
// every write goes out at once.
func TestLeadSendsHeldWritesTogether(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var writes atomic.Int64
	report := make(chan string, 10)
	finished := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr, err := (&Upgrader{}).Upgrade(w, r)
		if err != nil {
			report <- err.Error()
			return
		}
		c := NewConn(tr, func(ctx context.Context, req Message) (any, error) {
			if req.Op() == "finish" {
				close(finished)
			}
			return echoHandler(ctx, req)
		})
		c.Lead(func() {
			var sent []*Pending
			for _, v := range []string{"a", "b", "c"} {
				p, err := c.Send("echo", map[string]any{"value": v})
				if err != nil {
					report <- err.Error()
					return
				}
				sent = append(sent, p)
			}
			for i, p := range sent {
				if got, err := p.Wait(ctx); err != nil || got != string(rune('a'+i)) {
					report <- fmt.Sprintf("answer %d = %v, %v", i, got, err)
				}
			}
			if n := writes.Load(); n != 1 {
				report <- fmt.Sprintf("the answer to the upgrade and three requests took %d writes", n)
			}
			go func() {
				if _, err := c.Call(ctx, "echo", map[string]any{"value": "from another goroutine"}); err != nil {
					report <- "call beside the lead: " + err.Error()
				}
			}()
			if err := c.Wait(ctx, finished); err != nil {
				report <- "lead's wait: " + err.Error()
			}
		})
		go c.Serve()
		before := writes.Load()
		if _, err := c.Call(ctx, "echo", map[string]any{"value": "after"}); err != nil || writes.Load()-before != 1 {
			report <- fmt.Sprintf("call after Lead: %v, %d writes", err, writes.Load()-before)
		}
		close(report)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = countingListener{l, &writes}
	srv.Start()
	defer srv.Close()

	var client *Conn
	tr, err := (&Dialer{}).Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), "s1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	client = NewConn(tr, func(_ context.Context, req Message) (any, error) {
		v, _ := req.String("value")
		if v == "from another goroutine" {
			go client.Call(ctx, "finish", nil)
		}
		return v, nil
	})
	wait := serve(client)
	for msg := range report {
		t.Error(msg)
	}
	client.Close()
	wait()
}

// TestIdleWaitSeesBufferedMessages: a slave that sends two requests in
// one packet gets both answered, although the second one is already in
// the server's reader, not on the socket, when the server goes back to
// waiting for its next message between them.
func TestIdleWaitSeesBufferedMessages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr, err := (&Upgrader{}).Upgrade(w, r)
		if err != nil {
			return
		}
		NewConn(tr, echoHandler).Serve()
	}))
	defer srv.Close()
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: m\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	// Two masked binary frames, in one write.
	var packet []byte
	for seq, v := range []string{"first", "second"} {
		msg, err := AppendMessage(nil, "echo", int64(seq), map[string]any{"value": v})
		if err != nil {
			t.Fatal(err)
		}
		packet = append(packet, 0x82, 0x80|byte(len(msg)), 0, 0, 0, 0) // mask key 0: payload as is
		packet = append(packet, msg...)
	}
	if _, err := nc.Write(packet); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first", "second"} {
		var head [2]byte
		if _, err := io.ReadFull(br, head[:]); err != nil {
			t.Fatalf("answer %q: %v", want, err)
		}
		body := make([]byte, head[1]&0x7f)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatalf("answer %q: %v", want, err)
		}
		m, err := DecodeMessage(body)
		if err != nil || m["result"] != want {
			t.Fatalf("answer = %v, %v; want result %q", m, err, want)
		}
	}
}

// TestGoParksAnIdleConnection: a server connection served by Go answers
// its peer's requests and, between them, holds no goroutine: it is
// parked with the poller (on Linux; elsewhere one goroutine waits in
// peek.Wait, not in the frame reader). It calls end with the cause once
// the peer leaves, or once our side closes it while parked.
func TestGoParksAnIdleConnection(t *testing.T) {
	for _, closer := range []string{"peer", "server"} {
		t.Run("closed by "+closer, func(t *testing.T) {
			ended := make(chan error, 1)
			served := make(chan *Conn, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tr, err := (&Upgrader{}).Upgrade(w, r)
				if err != nil {
					return
				}
				c := NewConn(tr, echoHandler)
				c.Go(func(cause error) { ended <- cause })
				served <- c
			}))
			defer srv.Close()
			tr, err := (&Dialer{}).Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http"), "s1", "pw")
			if err != nil {
				t.Fatal(err)
			}
			client := NewConn(tr, echoHandler)
			wait := serve(client)
			defer wait()
			defer client.Close()
			for _, v := range []string{"a", "b", "c"} {
				if got, err := client.Call(t.Context(), "echo", map[string]any{"value": v}); err != nil || got != v {
					t.Fatalf("call %q = %v, %v", v, got, err)
				}
			}
			if runtime.GOOS == "linux" {
				if serving := stacks.AwaitNone("wire.(*Conn).serveFrom"); len(serving) != 0 {
					t.Errorf("goroutines serving an idle connection: %q", serving)
				}
			} else if serving := stacks.Await("wire.(*Conn).serveFrom", "peek.Wait"); len(serving) != 1 || !strings.Contains(serving[0], "peek.Wait") {
				t.Errorf("goroutines serving the connection: %q", serving)
			}
			want := ErrClosed
			if closer == "peer" {
				client.Close()
				want = nil
			} else {
				(<-served).Close()
			}
			switch cause := <-ended; {
			case cause == nil:
				t.Error("end called with a nil cause")
			case want != nil && !errors.Is(cause, want):
				t.Errorf("end called with %v, want %v", cause, want)
			}
		})
	}
}

// TestWriteDeadlineOnlyWhileWriting: the deadline gorilla/websocket sets
// before each frame bounds the write to the socket (a peer that reads
// nothing fails it at the deadline), but is no longer the socket's once
// the write is done, so that no timer fires on an idle connection.
func TestWriteDeadlineOnlyWhileWriting(t *testing.T) {
	deadlinetest.OnlyWhileWriting(t, func(sock net.Conn) func([]byte) error {
		c := &heldConn{Conn: sock}
		return func(p []byte) error {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			_, err := c.Write(p)
			return err
		}
	})
}

// TestSetDeadlineReachesTheSocket: gorilla/websocket clears the upgrade
// request's deadlines with SetDeadline; the socket's write deadline must
// go too, or a write after it would fail.
func TestSetDeadlineReachesTheSocket(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	sock := &deadlinetest.Conn{Conn: a}
	c := &heldConn{Conn: sock}
	defer c.Close()
	c.SetDeadline(time.Time{})
	if len(sock.Deadlines) != 1 || !sock.Deadlines[0].IsZero() {
		t.Errorf("the socket's deadlines = %v, want cleared", sock.Deadlines)
	}
}

// TestWriteThatWaitsOnASocketHasTheDeadline: over a real socket, what
// the socket takes at once goes without a deadline, and the rest of a
// write the peer does not read waits under the deadline set (here one
// already past, so it fails at once).
func TestWriteThatWaitsOnASocketHasTheDeadline(t *testing.T) {
	sock, _ := tcppair.New(t)
	c := &heldConn{Conn: sock}
	defer c.Close()

	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if n, err := c.Write([]byte("small")); n != 5 || err != nil {
		t.Fatalf("a write the socket takes at once = %d, %v; the deadline matters only to a write that waits", n, err)
	}
	big := make([]byte, 64<<20)
	n, err := c.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(big) {
		t.Errorf("a write that has to wait = %d of %d bytes, %v; want what the socket took, then the deadline's error", n, len(big), err)
	}
}
