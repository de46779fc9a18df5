//go:build unix

package trywrite

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/buildslave/buildslave/internal/tcppair"
)

// TestWritesWhatTheSocketTakes: a socket with room takes a write whole;
// one whose peer reads nothing takes less and less until it takes
// nothing, and Write returns at once each time; what it took arrives in
// order once the peer reads.
func TestWritesWhatTheSocketTakes(t *testing.T) {
	server, client := tcppair.New(t)
	w := New(server)
	if n, err := w.now([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("write to a socket with room = %d, %v", n, err)
	}
	var sent bytes.Buffer
	sent.WriteString("hello")
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for {
		n, err := w.now(chunk)
		if err != nil {
			t.Fatal(err)
		}
		sent.Write(chunk[:n])
		if n == 0 {
			break // the socket and the peer's are full
		}
	}
	got := make([]byte, sent.Len())
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, sent.Bytes()) {
		t.Errorf("the peer read %d bytes (%v), want the %d written", len(got), err, sent.Len())
	}
}

// TestNotASocketTakesNothing: a pipe is not a socket: nothing is
// written without its deadline.
func TestNotASocketTakesNothing(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if n, err := New(a).now([]byte("x")); n != 0 || err != nil {
		t.Errorf("Write on a pipe = %d, %v", n, err)
	}
}

// TestClosedSocket: a write to a closed connection fails.
func TestClosedSocket(t *testing.T) {
	server, _ := tcppair.New(t)
	server.Close()
	if _, err := New(server).now([]byte("x")); err == nil {
		t.Error("write to a closed connection succeeded")
	}
}
