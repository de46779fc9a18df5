package pb_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/slave"
)

// TestSilentSocketsDoNotLockOutASlave: with the pending cap full of
// silent sockets, a slave still logs in (the oldest silent one makes room),
// and once logged in it no longer counts as pending.
func TestSilentSocketsDoNotLockOutASlave(t *testing.T) {
	old, _ := slave.New("old", "pw")
	m, err := slave.NewManager(slave.Config{}, old)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lim := &connlimit.Limiter{MaxPending: 4}
	addr := startServer(t, &pb.Server{Manager: m, Limiter: lim})
	for range 20 {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}

	for deadline := time.Now().Add(10 * time.Second); lim.Pending() != 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections pending, want the cap of 4", lim.Pending())
		}
	}

	nc, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := pb.Connect(nc, pb.BrokerConfig{})
	if err != nil {
		t.Fatalf("handshake with the cap full of silent sockets: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve() }()
	defer func() { b.Close(); <-served }()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := b.Login(ctx, "old", "pw", &oldBot{t: t, calls: make(chan string, 100)}); err != nil {
		t.Fatal(err)
	}
	if n := lim.Pending(); n > 3 {
		t.Errorf("%d connections pending with 3 silent ones at most left beside the logged-in slave", n)
	}
}
