package idle

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/tcppair"
)

// resumed parks w and returns a channel closed when it is resumed.
func resumed(t *testing.T, w *Watcher) chan struct{} {
	t.Helper()
	ch := make(chan struct{})
	if !w.Park(func() { close(ch) }) {
		t.Fatal("Park did not park a socket")
	}
	return ch
}

// wait fails the test unless ch is closed within a generous bound (a
// resume that never comes would hang the test otherwise).
func wait(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("not resumed: %s", what)
	}
}

// notYet fails the test if ch is closed once the poller had a chance to
// run.
func notYet(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	runtime.Gosched()
	select {
	case <-ch:
		t.Fatalf("resumed too early: %s", what)
	default:
	}
}

// TestParkResumesWhenBytesCome: a parked socket is resumed once its peer
// writes, with the bytes left to read, and again at every park after
// (the registration is re-armed, one event at a time).
func TestParkResumesWhenBytesCome(t *testing.T) {
	server, client := tcppair.New(t)
	w := Watch(server)
	defer w.Close()
	for i := range 3 {
		ch := resumed(t, w)
		notYet(t, ch, "nothing was written")
		client.Write([]byte{byte(i)})
		wait(t, ch, "after the peer wrote")
		var b [1]byte
		if _, err := io.ReadFull(server, b[:]); err != nil || b[0] != byte(i) {
			t.Fatalf("read %v, %v; want %d", b, err, i)
		}
	}
}

// TestParkWithBytesThereResumesAtOnce: bytes that came before the park
// count (the poller is level-triggered).
func TestParkWithBytesThereResumesAtOnce(t *testing.T) {
	server, client := tcppair.New(t)
	w := Watch(server)
	defer w.Close()
	client.Write([]byte("x"))
	for range 2 { // the byte is still unread at the second park
		wait(t, resumed(t, w), "bytes were there")
	}
}

// TestParkResumesWhenThePeerLeaves: the peer's close resumes, and the
// read finds the end.
func TestParkResumesWhenThePeerLeaves(t *testing.T) {
	server, client := tcppair.New(t)
	w := Watch(server)
	defer w.Close()
	ch := resumed(t, w)
	client.Close()
	wait(t, ch, "after the peer closed")
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after the peer left: %v, want EOF", err)
	}
}

// TestCloseResumesAParkedConnection: closing our end takes it out of the
// poller without an event, so Close resumes it; it parks no more.
func TestCloseResumesAParkedConnection(t *testing.T) {
	server, _ := tcppair.New(t)
	w := Watch(server)
	ch := resumed(t, w)
	server.Close()
	notYet(t, ch, "Close was not called")
	w.Close()
	wait(t, ch, "after Close")
	w.Close() // idempotent
	if w.Park(func() { t.Error("resumed after Close") }) {
		t.Error("Park parked after Close")
	}
	p := thePoller()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.watchers[w.fd.id]; ok {
		t.Error("the poller still holds the Watcher after Close")
	}
}

// TestParkOfAClosedSocketRefuses: a socket closed before Park cannot be
// armed: Park reports false and resume never runs, so the caller reads
// (and learns of the close) itself.
func TestParkOfAClosedSocketRefuses(t *testing.T) {
	server, _ := tcppair.New(t)
	w := Watch(server)
	defer w.Close()
	server.Close()
	if w.Park(func() { t.Error("resumed a refused park") }) {
		t.Error("Park parked a closed socket")
	}
}

// TestParkedConnectionsHoldNoGoroutine: 200 parked connections hold no
// goroutine between them.
func TestParkedConnectionsHoldNoGoroutine(t *testing.T) {
	const n = 200
	ws := make([]*Watcher, n)
	peers := make([]net.Conn, n)
	for i := range ws {
		var server net.Conn
		server, peers[i] = tcppair.New(t)
		ws[i] = Watch(server)
		defer ws[i].Close()
	}
	g0 := runtime.NumGoroutine()
	chs := make([]chan struct{}, n)
	for i, w := range ws {
		chs[i] = resumed(t, w)
	}
	if g := runtime.NumGoroutine() - g0; g > 0 {
		t.Errorf("%d parked connections hold %d goroutines", n, g)
	}
	for i, p := range peers {
		p.Write([]byte("x"))
		wait(t, chs[i], "after its peer wrote")
	}
}

// TestWatchOfAPipeIsNil: what is not a socket cannot be parked; a nil
// Watcher refuses to park and closes quietly.
func TestWatchOfAPipeIsNil(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := Watch(a)
	if w != nil {
		t.Fatal("Watch of a pipe is not nil")
	}
	if w.Park(func() {}) {
		t.Error("a nil Watcher parked")
	}
	w.Close()
}
