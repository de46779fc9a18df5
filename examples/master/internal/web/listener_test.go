package web

import (
	"errors"
	"log/slog"
	"net"
	"testing"
	"testing/synctest"

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
