package wire

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
)

// dialServed serves handler behind up on a test server and returns a
// served Conn to it (answering with echoHandler), its transport, and the
// result of the server side's Serve. The Conn is closed when the test
// ends.
func dialServed(t *testing.T, up *Upgrader, handler Handler) (*Conn, Transport, <-chan error) {
	served := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr, err := up.Upgrade(w, r)
		if err != nil {
			served <- err
			return
		}
		served <- NewConn(tr, handler).Serve()
	}))
	t.Cleanup(srv.Close)
	d := &Dialer{}
	tr, err := d.Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http"), "s1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(tr, echoHandler)
	wait := serve(c)
	t.Cleanup(func() { c.Close(); wait() })
	return c, tr, served
}

// budgetedPipe is a pipe end whose messages reserve from a budget.
type budgetedPipe struct {
	Transport
	b *budget.Budget
}

func (p budgetedPipe) budget() *budget.Budget { return p.b }

// budgetedConns returns n Conns over pipes sharing the budget b, serving
// handler, and their peers.
func budgetedConns(t *testing.T, n int, b *budget.Budget, handler Handler) ([]*Conn, []rawPeer) {
	var conns []*Conn
	var peers []rawPeer
	for range n {
		near, far := Pipe()
		c := NewConn(budgetedPipe{near, b}, handler)
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		peers = append(peers, rawPeer{t, far})
	}
	return conns, peers
}

// TestMessagesShareTheBudget: a message handled holds its share of the
// budget shared by the connections; another connection's message that does
// not fit beside it waits until it is handled, then goes through.
func TestMessagesShareTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(1<<20, time.Minute)
		release := make(chan struct{})
		handled := make(chan string, 2)
		conns, peers := budgetedConns(t, 2, b, func(_ context.Context, req Message) (any, error) {
			handled <- req.Op()
			if req.Op() == "hold" {
				<-release
			}
			return nil, nil
		})
		for _, c := range conns {
			go c.Serve()
		}
		// Each needs its 100 KiB, 8 bytes of decoding per byte and 64 KiB
		// before decoding: more than half of the budget.
		big := map[string]any{"value": make([]byte, 100<<10)}
		peers[0].send("hold", 0, big)
		synctest.Wait()
		held := b.InUse()
		if held < 100<<10 || held > 150<<10 {
			t.Errorf("a handled message of 100 KiB holds %d bytes, want its decoded value (100–150 KiB)", held)
		}
		peers[1].send("echo", 0, big)
		synctest.Wait()
		if len(handled) != 1 {
			t.Fatal("a message was decoded beside another that holds the budget it needs")
		}
		close(release)
		peers[0].recv()
		peers[1].recv()
		if got := []string{<-handled, <-handled}; got[1] != "echo" {
			t.Errorf("handled %v, want the echo after the hold", got)
		}
		synctest.Wait()
		if n := b.InUse(); n != 0 {
			t.Errorf("%d bytes still reserved once both messages are handled", n)
		}
	})
}

// TestBudgetWaitIsBounded: a message that cannot get its share within the
// budget's wait ends its connection with ErrExhausted.
func TestBudgetWaitIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := budget.New(1<<20, time.Minute)
		release := make(chan struct{})
		defer close(release)
		conns, peers := budgetedConns(t, 2, b, func(_ context.Context, req Message) (any, error) {
			<-release
			return nil, nil
		})
		go conns[0].Serve()
		wait := serve(conns[1])
		big := map[string]any{"value": make([]byte, 100<<10)}
		peers[0].send("hold", 0, big)
		synctest.Wait()
		start := time.Now()
		peers[1].send("echo", 0, big)
		err := wait()
		if !errors.Is(err, budget.ErrExhausted) {
			t.Errorf("Serve = %v, want ErrExhausted", err)
		}
		if waited := time.Since(start); waited != time.Minute {
			t.Errorf("the message waited %v for the budget, want 1m0s", waited)
		}
	})
}

// TestWebSocketFramesReserve: over a WebSocket with a Budget, a frame and
// its decoding hold their share while handled, and a frame whose decoding
// would take more than the whole budget is refused naming it.
func TestWebSocketFramesReserve(t *testing.T) {
	const size = 4 << 20
	b := budget.New(size, time.Minute)
	inUse := make(chan int64, 1)
	c, tr, served := dialServed(t, &Upgrader{WebSocketConfig{Budget: b}}, func(ctx context.Context, req Message) (any, error) {
		inUse <- b.InUse()
		return nil, nil
	})
	// 1 MiB is past unreservedFrame: the frame reserved up to the whole
	// budget, then kept what its value takes.
	if _, err := c.Call(t.Context(), "hold", map[string]any{"value": make([]byte, 1<<20)}); err != nil {
		t.Fatal(err)
	}
	if n := <-inUse; n < 1<<20 || n > 2<<20 {
		t.Errorf("a 1 MiB frame held %d bytes of the budget while handled, want its value (1–2 MiB)", n)
	}
	if err := tr.WriteMessage(WorstFrames()["maps, long keys"]); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "memory budget") {
		t.Errorf("server's Serve = %v, want a frame refused at the memory budget", err)
	}
}

// TestBufferLargerThanTheBudgetLeavesNoMemory: a frame whose buffer
// alone takes the whole budget is not decoded without a memory bound.
func TestBufferLargerThanTheBudgetLeavesNoMemory(t *testing.T) {
	buf := make([]byte, 0, 8<<10)
	p := append(buf, "\x82\xa2op\xa1x\xaaseq_number\x01"...)
	b := budget.New(4<<10, time.Second)
	res := b.Reserve(t.Context())
	defer res.Release()
	if _, err := (DecodeLimits{}).decodeReserved(p, &res); err == nil || !strings.Contains(err.Error(), "memory budget") {
		t.Fatalf("decoding a frame whose buffer exceeds the budget: %v, want the budget's error", err)
	}
}
