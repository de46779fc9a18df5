//go:build unix

package peek

import (
	"io"
	"net"
	"testing"

	"github.com/buildslave/buildslave/internal/tcppair"
)

// TestWaitReturnsOnceBytesCome: Wait returns when the peer's byte
// arrives, and leaves it to be read; Unread sees it meanwhile.
func TestWaitReturnsOnceBytesCome(t *testing.T) {
	server, client := tcppair.New(t)
	if Unread(server) {
		t.Fatal("Unread before the peer wrote")
	}
	waited := make(chan struct{})
	go func() {
		if !Wait(server) {
			t.Error("Wait did not wait on a socket")
		}
		close(waited)
	}()
	client.Write([]byte("x"))
	<-waited
	if !Unread(server) {
		t.Error("Unread after Wait = false")
	}
	var b [1]byte
	if n, err := server.Read(b[:]); n != 1 || err != nil || b[0] != 'x' {
		t.Errorf("read after Wait = %d %v %q", n, err, b[:n])
	}
}

// TestWaitReturnsWhenThePeerCloses: a closed connection ends the wait;
// the read then finds the end.
func TestWaitReturnsWhenThePeerCloses(t *testing.T) {
	server, client := tcppair.New(t)
	waited := make(chan struct{})
	go func() {
		if !Wait(server) {
			t.Error("Wait did not wait on a socket")
		}
		close(waited)
	}()
	client.Close()
	<-waited
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after the peer closed = %v", err)
	}
}

// TestNotASocket: a connection without a file descriptor is never
// waited on.
func TestNotASocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wait(a) {
		t.Error("Wait on a pipe waited")
	}
	if Unread(a) {
		t.Error("Unread on a pipe")
	}
}
