//go:build unix

package peek

import (
	"io"
	"net"
	"testing"
)

func pair(t *testing.T) (server, client net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestWaitReturnsOnceBytesCome: Wait returns when the peer's byte
// arrives, and leaves it to be read; Unread sees it meanwhile.
func TestWaitReturnsOnceBytesCome(t *testing.T) {
	server, client := pair(t)
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
	server, client := pair(t)
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
