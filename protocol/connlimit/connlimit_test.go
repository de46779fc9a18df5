package connlimit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
)

// fakeConn is a connection from a given address that records its Close.
type fakeConn struct {
	net.Conn
	peer   net.Conn // the other end
	remote net.Addr
	closed atomic.Bool
}

func newFakeConn(addr string) *fakeConn {
	a, b := net.Pipe()
	return &fakeConn{Conn: a, peer: b, remote: net.TCPAddrFromAddrPort(netipAddrPort(addr))}
}

// talk has the peer of raw send a byte, which c, what Accept returned
// for raw, reads.
func talk(t *testing.T, raw *fakeConn, c net.Conn) {
	t.Helper()
	go raw.peer.Write([]byte{1})
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.remote }
func (c *fakeConn) Close() error         { c.closed.Store(true); return c.Conn.Close() }

// fakeListener hands out what is sent on next; Accept calls are recorded.
type fakeListener struct {
	next    chan any // *fakeConn or error
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	accepts []time.Time
}

func newFakeListener() *fakeListener {
	return &fakeListener{next: make(chan any), done: make(chan struct{})}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.accepts = append(l.accepts, time.Now())
	l.mu.Unlock()
	select {
	case v := <-l.next:
		if err, ok := v.(error); ok {
			return nil, err
		}
		return v.(*fakeConn), nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *fakeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9989} }

// fixture is a Limiter with a log buffer, wrapping a fake listener whose
// accepted connections arrive on accepted.
type fixture struct {
	lim      *Limiter
	fake     *fakeListener
	l        net.Listener
	logs     *testlog.Buffer
	accepted chan net.Conn
	wg       sync.WaitGroup
}

func newFixture(t *testing.T, lim *Limiter) *fixture {
	f := &fixture{lim: lim, fake: newFakeListener(), logs: &testlog.Buffer{}, accepted: make(chan net.Conn)}
	lim.Logger = slog.New(slog.NewTextHandler(f.logs, nil))
	f.l = lim.Listen(f.fake)
	f.wg.Go(func() {
		for {
			c, err := f.l.Accept()
			if err != nil {
				close(f.accepted)
				return
			}
			f.accepted <- c
		}
	})
	t.Cleanup(func() { f.l.Close(); f.wg.Wait() })
	return f
}

// dial has the listener accept a connection from addr and returns it,
// and what Accept returned for it, or nil if it was closed at accept.
func (f *fixture) dial(t *testing.T, addr string) (*fakeConn, net.Conn) {
	t.Helper()
	c := newFakeConn(addr)
	f.fake.next <- c
	synctest.Wait()
	select {
	case got := <-f.accepted:
		return c, got
	default:
		if !c.closed.Load() {
			t.Fatalf("connection from %s neither accepted nor closed", addr)
		}
		return c, nil
	}
}

func TestPerAddressCapClosesNewConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &Limiter{MaxPendingPerIP: 3})
		var held []net.Conn
		for i := range 3 {
			if _, c := f.dial(t, fmt.Sprintf("192.0.2.1:%d", 1000+i)); c != nil {
				held = append(held, c)
			}
		}
		for i := range 2 {
			if raw, c := f.dial(t, fmt.Sprintf("192.0.2.1:%d", 2000+i)); c != nil || !raw.closed.Load() {
				t.Fatalf("connection %d over the address's cap not closed at accept", i)
			}
		}
		if _, c := f.dial(t, "192.0.2.2:1"); c == nil {
			t.Fatal("another address's connection closed")
		}
		if n := len(f.logs.Matching("over their cap", "remote=192.0.2.1/32", "cap=3")); n != 1 || len(f.logs.Lines()) != 1 {
			t.Errorf("log: %q", f.logs.Lines())
		}
		// An admitted connection no longer counts.
		if !Admit(held[0]) || Admit(held[0]) {
			t.Error("Admit did not report a pending connection once")
		}
		if _, c := f.dial(t, "192.0.2.1:3000"); c == nil {
			t.Fatal("a connection was closed after another from its address was admitted")
		}
		for _, c := range held[1:] {
			c.Close()
		}
		if f.lim.Pending() != 2 {
			t.Errorf("%d pending, want 2", f.lim.Pending())
		}
		held[0].Close() // admitted: changes nothing
		if lines := f.logs.Matching("back under their cap"); len(lines) != 0 {
			t.Errorf("back under the cap with a connection pending: %q", lines)
		}
		if f.lim.Pending() != 2 {
			t.Errorf("%d pending after an admitted connection closed, want 2", f.lim.Pending())
		}
	})
}

func TestPerAddressCapLogsWhenTheAddressIsBackUnder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &Limiter{MaxPendingPerIP: 1})
		_, c := f.dial(t, "[2001:db8:1:2::1]:1")
		f.dial(t, "[2001:db8:1:2::2]:1") // same /64: closed
		f.dial(t, "[2001:db8:1:2::3]:1")
		c.Close()
		lines := f.logs.Matching("back under their cap", "remote=2001:db8:1:2::/64", "closed=2")
		if len(lines) != 1 || len(f.logs.Lines()) != 2 {
			t.Errorf("log: %q", f.logs.Lines())
		}
	})
}

func TestTotalCapClosesTheOldest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &Limiter{MaxPending: 4})
		var raws []*fakeConn
		var conns []net.Conn
		for i := range 7 {
			raw, c := f.dial(t, fmt.Sprintf("192.0.2.%d:1", i+1))
			if c == nil {
				t.Fatalf("connection %d closed at accept", i)
			}
			raws, conns = append(raws, raw), append(conns, c)
		}
		for i, raw := range raws {
			if want := i < 3; raw.closed.Load() != want {
				t.Errorf("connection %d closed: %v, want %v", i, raw.closed.Load(), want)
			}
		}
		if f.lim.Pending() != 4 {
			t.Errorf("%d pending, want 4", f.lim.Pending())
		}
		if n := len(f.logs.Matching("at their cap", "cap=4")); n != 1 || len(f.logs.Lines()) != 1 {
			t.Errorf("log: %q", f.logs.Lines())
		}
		conns[3].Close() // 3 pending: back under at three quarters of the cap
		if n := len(f.logs.Matching("back under their cap", "closed=3")); n != 1 || len(f.logs.Lines()) != 2 {
			t.Errorf("log: %q", f.logs.Lines())
		}
	})
}

func TestAdmitThroughTLS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &Limiter{})
		_, c := f.dial(t, "192.0.2.1:1")
		if !Admit(tls.Server(c, &tls.Config{})) || f.lim.Pending() != 0 {
			t.Error("a pending connection under TLS was not admitted")
		}
		a, _ := net.Pipe()
		if Admit(a) {
			t.Error("Admit of a connection no Limiter accepted reported true")
		}
	})
}

func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &Limiter{})
		for range 10 { // out of file descriptors, not marked temporary
			f.fake.next <- fmt.Errorf("accept4: %w", syscall.EMFILE)
		}
		if _, c := f.dial(t, "192.0.2.1:1"); c == nil {
			t.Fatal("connection after the errors closed")
		}
		f.fake.mu.Lock()
		var delays []time.Duration
		for i := 1; i < len(f.fake.accepts); i++ {
			delays = append(delays, f.fake.accepts[i].Sub(f.fake.accepts[i-1]))
		}
		f.fake.mu.Unlock()
		want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
		if len(delays) < len(want) {
			t.Fatalf("delays %v", delays)
		}
		for i, d := range want {
			if delays[i] != d*time.Millisecond {
				t.Errorf("delay %d = %v, want %v", i, delays[i], d*time.Millisecond)
			}
		}
		if len(f.logs.Matching("accept failing", "too many open files")) != 1 || len(f.logs.Matching("accept works again", "failures=10")) != 1 ||
			len(f.logs.Lines()) != 2 {
			t.Errorf("log: %q", f.logs.Lines())
		}
	})
}

func TestCloseEndsTheBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := newFakeListener()
		l := (&Limiter{Logger: slog.New(slog.DiscardHandler)}).Listen(fake)
		done := make(chan error)
		go func() { _, err := l.Accept(); done <- err }()
		fake.next <- syscall.ENFILE
		synctest.Wait() // backing off
		start := time.Now()
		l.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) || time.Since(start) != 0 {
			t.Errorf("Accept after Close: %v after %v", err, time.Since(start))
		}
	})
}

func TestOtherAcceptErrorsAreReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := newFakeListener()
		l := (&Limiter{}).Listen(fake)
		boom := errors.New("boom")
		go func() { fake.next <- boom }()
		if _, err := l.Accept(); err != boom {
			t.Errorf("Accept = %v, want boom", err)
		}
	})
}

func netipAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestTotalCapWaitsForLoginsInProgress: at the total cap, connections
// younger than MinPendingAge keep their place; the next is accepted as
// soon as one logs in, or once the oldest is old enough to make room.
func TestTotalCapWaitsForLoginsInProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &Limiter{MaxPending: 2, MinPendingAge: time.Second})
		_, c1 := f.dial(t, "192.0.2.1:1")
		raw2, c2 := f.dial(t, "192.0.2.2:1")
		talk(t, raw2, c2) // logging in
		start := time.Now()
		raw3 := newFakeConn("192.0.2.3:1")
		go func() { f.fake.next <- raw3 }()
		Admit(c1) // c1 logged in: its place frees at once
		c3 := <-f.accepted
		if c3 == nil || time.Since(start) != 0 {
			t.Fatalf("accepted %v after %v, want at once", c3, time.Since(start))
		}
		talk(t, raw3, c3)
		if raw2.closed.Load() {
			t.Fatal("a login in progress was closed to make room")
		}
		go func() { f.fake.next <- newFakeConn("192.0.2.4:1") }()
		<-f.accepted // waits until the oldest login in progress is a second old, then closes it
		if time.Since(start) != time.Second || !raw2.closed.Load() {
			t.Errorf("after %v, oldest closed %v; want 1s, true", time.Since(start), raw2.closed.Load())
		}
	})
}

func TestTotalCapClosesSilentConnectionsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, &Limiter{MaxPending: 2, MinPendingAge: time.Second, MinSilentAge: 100 * time.Millisecond})
		raw1, c1 := f.dial(t, "192.0.2.1:1")
		talk(t, raw1, c1) // the oldest, logging in
		raw2, _ := f.dial(t, "192.0.2.2:1")
		start := time.Now()
		raw3, c3 := f.dial(t, "192.0.2.3:1") // waits until the silent one is MinSilentAge old
		if c3 == nil || time.Since(start) != 100*time.Millisecond || !raw2.closed.Load() || raw1.closed.Load() {
			t.Fatalf("after %v: accepted %v, silent closed %v, talking closed %v; want 100ms, true, true, false",
				time.Since(start), c3 != nil, raw2.closed.Load(), raw1.closed.Load())
		}
		// The talking one is older, but the new silent one goes first.
		f.dial(t, "192.0.2.4:1")
		if time.Since(start) != 200*time.Millisecond || !raw3.closed.Load() || raw1.closed.Load() {
			t.Errorf("after %v: the second silent one closed %v, the talking one %v; want 200ms, true, false",
				time.Since(start), raw3.closed.Load(), raw1.closed.Load())
		}
	})
}
