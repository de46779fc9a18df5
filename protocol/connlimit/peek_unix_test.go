//go:build unix

package connlimit

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/internal/peek"
)

// TestBytesNotYetReadAreNotSilence: on a busy master the first bytes of a
// real slave may wait in the kernel before anyone reads them; at the
// total cap the connection that sent them is not taken for a silent one.
func TestBytesNotYetReadAreNotSilence(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := &Limiter{MaxPending: 2, MinPendingAge: time.Hour, MinSilentAge: time.Nanosecond, Logger: slog.New(slog.DiscardHandler)}
	l := lim.Listen(ln)
	defer l.Close()
	dial := func() (client, server net.Conn) {
		t.Helper()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		server, err = l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { server.Close() })
		return client, server
	}
	spoke, spokeServer := dial() // the oldest: it sends, nobody reads
	if _, err := spoke.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !peek.Unread(spokeServer.(*conn).Conn); {
		if time.Now().After(deadline) {
			t.Fatal("the bytes sent never reached the accepted socket")
		}
	}
	silent, _ := dial()
	dial() // the cap: one of the two makes room
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the silent connection: read %v, want EOF (closed to make room)", err)
	}
	spoke.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := spoke.Read(make([]byte, 1)); err == io.EOF {
		t.Error("the connection that sent bytes nobody read yet was closed as a silent one")
	}
}
