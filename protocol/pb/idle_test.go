package pb

import (
	"net"
	"testing"

	"github.com/buildslave/buildslave/protocol/budget"
)

// TestIdleConnectionHoldsNoReadBuffer checks that the reader gives its
// buffer back between messages (an idle slave costs no 4 KiB buffer on the
// master) and still reads messages that arrive byte by byte, two at once,
// or after a pause.
func TestIdleConnectionHoldsNoReadBuffer(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	d := decoder{reader: newReader(server, Limits{}, budget.Reservation{}), refs: map[int64]any{}}

	msg := func(n int64) []byte {
		w := writer{vocab: true}
		w.list(2)
		w.atom("version")
		w.int(n)
		return w.b
	}
	two := append(msg(1), msg(2)...)
	go func() {
		for _, b := range msg(6) { // byte by byte
			client.Write([]byte{b})
		}
		client.Write(two) // two messages in one write
		client.Write(msg(3))
	}()
	for _, want := range []int64{6, 1, 2, 3} {
		m, err := d.message()
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 2 || text(m[0]) != "version" || m[1] != want {
			t.Fatalf("read %v, want [version %d]", m, want)
		}
		if want == 1 {
			if d.r == nil {
				t.Fatal("the buffer was given back with the next message in it")
			}
			continue
		}
		if d.r != nil {
			t.Fatalf("after message %d with nothing more buffered, the reader still holds its buffer", want)
		}
	}
}
