// Package listeners is the accept loop both slave transports' servers
// run, and their wait at shutdown: a server may serve several listeners,
// and shutting it down closes them all, ends every loop and waits for its
// connections' goroutines.
package listeners

import (
	"context"
	"net"
	"sync"
)

// Set is the listeners a server accepts on. The zero value is ready.
type Set struct {
	mu     sync.Mutex
	closed bool
	ls     map[net.Listener]struct{}
}

// Serve accepts connections on l and hands each to start, until Close or
// an error of l's; then it closes l and returns closed after Close, else
// the error. After Close it closes l at once and returns closed.
func (s *Set) Serve(l net.Listener, closed error, start func(net.Conn)) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return closed
	}
	if s.ls == nil {
		s.ls = map[net.Listener]struct{}{}
	}
	s.ls[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.ls, l)
		s.mu.Unlock()
		l.Close()
	}()
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closed {
				return closed
			}
			return err
		}
		start(nc)
	}
}

// Close closes every listener: each Serve returns, and later ones return
// at once.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for l := range s.ls {
		l.Close()
	}
}

// Wait waits for wg, or returns ctx's error at its deadline.
func Wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
