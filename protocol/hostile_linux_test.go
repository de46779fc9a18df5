package protocol

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/slave"
)

// raiseFileLimit raises the soft limit on open files to the hard one, or
// skips the test if that is below need.
func raiseFileLimit(t *testing.T, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if lim.Max < need {
		t.Skipf("the hard limit on open files is %d, below the %d this test needs", lim.Max, need)
	}
	if lim.Cur < lim.Max {
		old := lim
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Skipf("setrlimit: %v", err)
		}
		t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
}

// TestSlaveAttachesWhileHostileSocketsAreOpen opens 10,000 silent sockets
// to a Server with the default caps, from one loopback address and from
// 100, then attaches a real slave from another address, and logs how
// long that took. The caps keep the master's side to their total.
func TestSlaveAttachesWhileHostileSocketsAreOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 sockets")
	}
	const hostile = 10000
	raiseFileLimit(t, hostile+connlimit.DefaultMaxPending+2000)
	for _, addrs := range []int{1, 100} {
		t.Run(fmt.Sprintf("addresses=%d", addrs), func(t *testing.T) {
			took, pending := attachUnderSiege(t, hostile, addrs)
			t.Logf("a real slave attached in %v while %d hostile sockets from %d addresses were open (%d pending on the master, cap %d)",
				took, hostile, addrs, pending, connlimit.DefaultMaxPending)
		})
	}
}

// attachUnderSiege opens hostile silent sockets from addrs loopback
// addresses, then attaches a slave from 127.0.0.1, and returns how long
// that took and how many connections were pending then.
func attachUnderSiege(t *testing.T, hostile, addrs int) (time.Duration, int) {
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	s1, _ := slave.New("s1", "pw")
	m, err := slave.NewManager(slave.Config{Logger: log}, s1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lim := &connlimit.Limiter{Logger: log}
	addr := startServer(t, &Server{Handler: &Handler{Manager: m, Logger: log}, Limiter: lim})

	start := time.Now()
	conns := make(chan net.Conn, hostile)
	defer func() {
		for c := range conns {
			c.Close()
		}
	}()
	var dialErrs sync.Map
	var wg sync.WaitGroup
	for w := range 100 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+w%addrs))}}
		wg.Go(func() {
			for range hostile / 100 {
				c, err := d.Dial("tcp", addr.String())
				if err != nil {
					dialErrs.Store(err.Error(), true)
					continue
				}
				conns <- c
			}
		})
	}
	wg.Wait()
	close(conns)
	dialErrs.Range(func(k, _ any) bool { t.Errorf("hostile dial: %v", k); return true })
	t.Logf("%d hostile sockets open in %v", len(conns), time.Since(start))

	start = time.Now()
	tr, err := dialerFrom("127.0.0.1").Dial(t.Context(), "ws://"+addr.String()+"/", "s1", "pw")
	if err != nil {
		t.Fatalf("the real slave's dial: %v", err)
	}
	newFakeSlave(t, tr)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	b.Release()
	took, pending := time.Since(start), lim.Pending()
	if pending > connlimit.DefaultMaxPending || addrs == 1 && pending > connlimit.DefaultMaxPendingPerIP {
		t.Errorf("%d connections pending on the master, above the caps", pending)
	}
	if addrs == 1 && len(logs.Matching("over their cap", "remote=127.0.1.1/32")) != 1 ||
		addrs > 1 && len(logs.Matching("at their cap")) != 1 {
		t.Errorf("log:\n%s", logs.String())
	}
	return took, pending
}
