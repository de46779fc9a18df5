package pb

import (
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/deadlinetest"
	"github.com/buildslave/buildslave/internal/stacks"
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

// writeCounter counts the writes to a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestTogetherSendsInOneWrite: the calls sent inside together reach the
// connection in one write, whole and in order; outside it, one each.
func TestTogetherSendsInOneWrite(t *testing.T) {
	ours, theirs := net.Pipe()
	defer ours.Close()
	defer theirs.Close()
	wc := &writeCounter{Conn: ours}
	b := newBroker(wc, BrokerConfig{}, nil)
	mind := &Ref{b: b, id: 1}
	got := make(chan []any, 3)
	go func() {
		d := newGoldenDecoder(theirs, Limits{})
		for range 3 {
			m, err := d.message()
			if err != nil {
				close(got)
				return
			}
			got <- m
		}
	}()
	if err := b.together(func() error {
		for _, method := range []string{"print", "getWorkerInfo"} {
			if _, err := mind.send(method, nil, nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := wc.writes.Load(); n != 1 {
		t.Errorf("two calls sent together took %d writes", n)
	}
	if _, err := mind.send("setBuilderList", nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := wc.writes.Load(); n != 2 {
		t.Errorf("a call after together took %d writes", n-1)
	}
	for _, want := range []string{"print", "getWorkerInfo", "setBuilderList"} {
		m, ok := <-got
		if !ok || len(m) < 4 || text(m[3]) != want {
			t.Fatalf("the peer read %v, want a call of %s", m, want)
		}
	}
}

// TestAttachedConnectionParks: once a slave attached and sent keepalives,
// the master holds no goroutine for its idle connection (on Linux, where
// it is parked with the poller; elsewhere one, waiting for the next
// message's first byte, not one that read the login and kept the stack
// that grew); the parked connection still answers, and the server's
// Close ends it.
func TestAttachedConnectionParks(t *testing.T) {
	tm := newTestMaster(t, nil)
	g := tm.attach("good1")
	tm.alive(g)
	tm.alive(g)
	checkIdleServing(t)
	tm.alive(g)
	closed := make(chan struct{})
	go func() {
		tm.s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(peerTimeout):
		t.Fatal("Close did not end the parked connection")
	}
	if err := <-g.served; err == nil {
		t.Error("the slave's connection did not end")
	}
	g.served <- nil // for its cleanup
}

// checkIdleServing checks that no goroutine serves an idle connection on
// Linux, and elsewhere that one does, waiting for the next message's first
// byte, and is not the one that read the login.
func checkIdleServing(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "linux" {
		if serving := stacks.AwaitNone("pb.(*Broker).serveFrom"); len(serving) != 0 {
			t.Errorf("goroutines serving an idle connection: %q", serving)
		}
		return
	}
	// The slave's own broker runs Serve, not serveFrom.
	serving := stacks.Await("pb.(*Broker).serveFrom", "pb.(*reader).await")
	if len(serving) != 1 || !strings.Contains(serving[0], "pb.(*reader).await") {
		t.Fatalf("goroutines serving the connection: %q", serving)
	}
	if !strings.Contains(serving[0], "created by github.com/buildslave/buildslave/protocol/pb.(*Broker).serveFrom") {
		t.Errorf("the goroutine that read the login still serves the connection:\n%s", serving[0])
	}
}

// TestQueuedAttachHoldsNoGoroutine: a slave that logged in while
// another's attach holds the only turn (MaxAttaching 1) waits for its
// own holding no goroutine (on Linux; elsewhere, on one that did not read
// its login), so that a storm of logins does not leave thousands of grown
// stacks waiting.
func TestQueuedAttachHoldsNoGoroutine(t *testing.T) {
	tm := newTestMaster(t, func(s *Server) { s.MaxAttaching = 1 })
	first := tm.dialRaw()
	challenge, challenger := first.login("good1")
	first.respond(challenge, challenger, "pw-good1")
	if msg, err := first.read(); err != nil || len(msg) != 7 || text(msg[3]) != "print" {
		t.Fatalf("the master's first call: %v, %v", msg, err)
	}
	// good1 answers nothing: its attach holds the turn.
	queued := tm.dialRaw()
	challenge, challenger = queued.login("good2")
	queued.respond(challenge, challenger, "pw-good2")
	if runtime.GOOS == "linux" {
		if waiting := stacks.AwaitNone("pb.(*Broker).serveFrom"); len(waiting) != 0 {
			t.Errorf("goroutines serving idle connections: %q", waiting)
		}
		// good1 leaves: good2's attach takes the turn.
		first.nc.Close()
		if msg, err := queued.read(); err != nil || len(msg) != 7 || text(msg[3]) != "print" {
			t.Fatalf("the master's first call to the queued slave: %v, %v", msg, err)
		}
		return
	}
	var waiting []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); runtime.Gosched() {
		waiting = stacks.Containing("pb.(*reader).await")
		if len(waiting) == 2 && strings.Contains(waiting[0], "runtime_pollWait") && strings.Contains(waiting[1], "runtime_pollWait") {
			break
		}
	}
	if len(waiting) != 2 {
		t.Fatalf("goroutines waiting for a slave's next message: %q", waiting)
	}
	for _, g := range waiting {
		if !strings.Contains(g, "created by github.com/buildslave/buildslave/protocol/pb.(*Broker).serveFrom") {
			t.Errorf("a goroutine that read a login waits for the next message:\n%s", g)
		}
	}
}

// TestWriteDeadlineOnlyWhileWriting: WriteTimeout bounds each write (a
// peer that reads nothing fails it), and the connection keeps no deadline
// once the write is done, so that no timer fires on an idle connection.
func TestWriteDeadlineOnlyWhileWriting(t *testing.T) {
	deadlinetest.OnlyWhileWriting(t, func(c net.Conn) func([]byte) error {
		b := newBroker(c, BrokerConfig{WriteTimeout: time.Second}, nil)
		t.Cleanup(func() { b.Close() })
		return b.write
	})
}
