package listeners

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
)

var errClosed = errors.New("closed")

// TestServeUntilClose serves two listeners: each connection reaches start,
// Close ends both loops with the closed error and closes the listeners,
// and a Serve after Close returns at once, closing its listener.
func TestServeUntilClose(t *testing.T) {
	var s Set
	var wg sync.WaitGroup
	accepted := make(chan net.Conn, 2)
	var addrs []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		wg.Go(func() {
			if err := s.Serve(l, errClosed, func(c net.Conn) { accepted <- c }); err != errClosed {
				t.Errorf("Serve = %v, want the closed error", err)
			}
		})
	}
	for _, a := range addrs {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		(<-accepted).Close()
	}
	s.Close()
	wg.Wait()
	for _, a := range addrs {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			t.Errorf("%s still accepts after Close", a)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l, errClosed, func(net.Conn) { t.Error("a connection after Close") }); err != errClosed {
		t.Errorf("Serve after Close = %v", err)
	}
	if _, err := l.Accept(); err == nil {
		t.Error("Serve after Close left its listener open")
	}
}

// TestWait returns once the group is done, or ctx's error before.
func TestWait(t *testing.T) {
	var wg sync.WaitGroup
	release := make(chan struct{})
	wg.Go(func() { <-release })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Wait(ctx, &wg); err != context.Canceled {
		t.Errorf("Wait with an ended context = %v", err)
	}
	close(release)
	if err := Wait(t.Context(), &wg); err != nil {
		t.Errorf("Wait = %v", err)
	}
}
