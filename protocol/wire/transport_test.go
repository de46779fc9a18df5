package wire

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// silentMaster dials a master that reads the upgrade request and never
// answers.
func silentMaster(t *testing.T) *Dialer {
	srv, cli := net.Pipe()
	go io.Copy(io.Discard, srv)
	t.Cleanup(func() { srv.Close() })
	return &Dialer{NetDialContext: func(context.Context, string, string) (net.Conn, error) { return cli, nil }}
}

// TestDialFollowsContext: cancelling the context of a Dial waiting for the
// upgrade's answer makes it return at once (it waited for WriteTimeout).
func TestDialFollowsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		d := silentMaster(t)
		done := make(chan error, 1)
		go func() {
			_, err := d.Dial(ctx, "ws://master.invalid/", "s1", "pw")
			done <- err
		}()
		synctest.Wait() // Dial waits for the answer
		start := time.Now()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Dial = %v, want context.Canceled", err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("Dial returned %v after the cancel", waited)
		}
	})
}

// TestDialTimeout: a master that never answers the upgrade fails the Dial
// after WriteTimeout.
func TestDialTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := silentMaster(t)
		d.WriteTimeout = 5 * time.Second
		start := time.Now()
		if _, err := d.Dial(t.Context(), "ws://master.invalid/", "s1", "pw"); err == nil {
			t.Fatal("Dial succeeded")
		}
		if waited := time.Since(start); waited != d.WriteTimeout {
			t.Errorf("Dial gave up after %v, want %v", waited, d.WriteTimeout)
		}
	})
}
