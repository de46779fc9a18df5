package web

import (
	"errors"
	"log/slog"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/internal/testlog"
)

// pipeListener is a net.Listener of in-memory connections.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *pipeListener) Close() error   { close(l.closed); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

// dial makes a connection for Accept to return.
func (l *pipeListener) dial() net.Conn {
	server, client := net.Pipe()
	l.conns <- server
	return client
}

func TestListenerCapsConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log testlog.Buffer
		g := New(Config{MaxConnections: 2, Limits: limit.New(slog.New(slog.NewTextHandler(&log, nil)))})
		pl := &pipeListener{conns: make(chan net.Conn, 10), closed: make(chan struct{})}
		ln := g.Listener(pl)
		accepted := make(chan net.Conn, 10)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					close(accepted)
					return
				}
				accepted <- c
			}
		}()
		for range 3 {
			pl.dial()
		}
		synctest.Wait()
		if len(accepted) != 2 {
			t.Fatalf("%d connections accepted with MaxConnections 2", len(accepted))
		}
		if len(log.Matching("limit=http_max_connections")) != 1 {
			t.Errorf("the cap is not logged:\n%s", log.String())
		}
		first := <-accepted
		first.Close()
		first.Close() // frees one slot, not two
		synctest.Wait()
		if len(accepted) != 2 {
			t.Fatalf("%d connections accepted once one of 2 closed, want the third", len(accepted))
		}
		pl.dial()
		synctest.Wait()
		if len(accepted) != 2 {
			t.Error("a fourth connection accepted: closing one twice freed two slots")
		}
		ln.Close()
		synctest.Wait()
		for range accepted {
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v", err)
		}
	})
}

func TestListenerReplacesTheLongestWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New(Config{MaxConnections: 2})
		pl := &pipeListener{conns: make(chan net.Conn, 10), closed: make(chan struct{})}
		ln := g.Listener(pl)
		defer ln.Close()
		accepted := make(chan *limitConn, 10)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c.(*limitConn)
			}
		}()
		gone := func(c *limitConn) bool {
			c.l.mu.Lock()
			defer c.l.mu.Unlock()
			return c.gone
		}
		pl.dial()
		synctest.Wait()
		busy := <-accepted
		done := busy.serve() // its request is being served: never replaced
		pl.dial()
		synctest.Wait()
		waiting := <-accepted
		time.Sleep(MinWaiting / 2)
		pl.dial()
		synctest.Wait()
		if len(accepted) != 0 {
			t.Fatal("a new connection took the place of one that had waited less than MinWaiting")
		}
		time.Sleep(MinWaiting / 2)
		synctest.Wait()
		if len(accepted) != 1 || !gone(waiting) || gone(busy) {
			t.Fatalf("once the waiting connection waited MinWaiting: %d accepted, it closed %v, the busy one closed %v; want 1, true, false",
				len(accepted), gone(waiting), gone(busy))
		}
		third := <-accepted
		done() // the busy one now waits for its next request, after the third
		time.Sleep(MinWaiting)
		pl.dial()
		synctest.Wait()
		if len(accepted) != 1 || !gone(third) || gone(busy) {
			t.Errorf("the third connection, waiting longest, was not the one replaced: %d accepted, closed %v, busy closed %v", len(accepted), gone(third), gone(busy))
		}
	})
}
