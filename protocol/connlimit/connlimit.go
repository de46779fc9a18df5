// Package connlimit caps the connections a server holds before they
// authenticate, in total and per remote address, so that silent or slow
// peers cannot take the file descriptors that attached slaves need.
//
// A Limiter wraps each listener of a transport (Listen); the transport
// calls Admit with a connection once it has authenticated, and from then
// on the connection no longer counts. Every transport of a master may
// share one Limiter, since they share one file descriptor limit.
package connlimit

import (
	"cmp"
	"container/list"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/buildslave/buildslave/protocol/internal/peek"
)

// Defaults for the zero values of Limiter's fields.
const (
	// DefaultMaxPending caps the connections not yet admitted, across a
	// Limiter's listeners: far below a master's file limit (Go raises the
	// soft limit to the hard one, often 65,536 or more), so that attached
	// slaves keep their headroom.
	DefaultMaxPending = 1024
	// DefaultMaxPendingPerIP caps the connections not yet admitted from
	// one IP address: a login takes milliseconds, so even many slaves
	// behind one NAT rarely hold more than a few at once.
	DefaultMaxPendingPerIP = 64
	// DefaultMinPendingAge is how long a pending connection keeps its
	// place when the total cap is reached: a slave logging in takes
	// milliseconds, so in an attach storm the listener waits for places
	// to free rather than closing logins in progress, while connections
	// that stay silent longer make room.
	DefaultMinPendingAge = 250 * time.Millisecond
	// DefaultMinSilentAge is how long a pending connection that has sent
	// nothing yet keeps its place when the total cap is reached. A slave
	// speaks as soon as it connects (a PB slave once it has read the
	// master's first words: one round trip), while a flood of silent
	// sockets must be closed as fast as it comes: a listener that waits
	// lets the kernel's accept queue overflow, and the queue then drops
	// real slaves' SYNs too (a second each, until retransmitted).
	DefaultMinSilentAge = 100 * time.Millisecond
)

// Back-off bounds after an accept error such as running out of file
// descriptors.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// Limiter counts the connections its listeners accepted and the
// transport has not admitted yet ("pending"), and closes the excess:
//
//   - beyond MaxPendingPerIP from one IP address (for IPv6, one /64), a
//     new connection is closed at accept;
//   - beyond MaxPending in total, a pending connection is closed to make
//     room for the new one: the oldest of those that have sent nothing
//     yet, once MinSilentAge old, else the oldest, once MinPendingAge
//     old (a peer that logs in takes milliseconds, so the oldest is the
//     likeliest to be stuck); until one is, the listener waits.
//
// Each cap logs one line when it starts closing connections and one when
// it stops. The zero value is ready to use; its fields must not change
// once a listener is wrapped.
type Limiter struct {
	// MaxPending caps pending connections in total; DefaultMaxPending if 0.
	MaxPending int
	// MaxPendingPerIP caps pending connections from one IP address;
	// DefaultMaxPendingPerIP if 0.
	MaxPendingPerIP int
	// MinPendingAge is how young the oldest pending connection may be for
	// the listener to wait, rather than close it, when the total cap is
	// reached; DefaultMinPendingAge if 0.
	MinPendingAge time.Duration
	// MinSilentAge is MinPendingAge for a connection that has sent
	// nothing yet; DefaultMinSilentAge if 0.
	MinSilentAge time.Duration
	// Logger gets one line per change of state; slog.Default() if nil.
	Logger *slog.Logger

	mu      sync.Mutex
	silent  list.List // pending *conn that have sent nothing, oldest first
	talking list.List // the other pending *conn, in the order they spoke
	perIP   map[netip.Prefix]*ipCount
	full    bool          // the total cap is closing old connections
	evicted int           // connections closed by the total cap since it was reached
	freed   chan struct{} // signalled when a pending connection stops counting
}

// ipCount is one address's pending connections.
type ipCount struct {
	pending int
	refused int // closed at accept since the address reached its cap
}

func (lim *Limiter) logger() *slog.Logger {
	if lim.Logger != nil {
		return lim.Logger
	}
	return slog.Default()
}

func (lim *Limiter) maxPending() int {
	if lim.MaxPending > 0 {
		return lim.MaxPending
	}
	return DefaultMaxPending
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (lim *Limiter) maxPerIP() int {
	if lim.MaxPendingPerIP > 0 {
		return lim.MaxPendingPerIP
	}
	return DefaultMaxPendingPerIP
}

// roomIn is how long the listener should wait before accepting: zero if
// the total cap has room, or a pending connection is old enough to be
// closed for the next one.
func (lim *Limiter) roomIn() (time.Duration, <-chan struct{}) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if lim.freed == nil {
		lim.freed = make(chan struct{}, 1)
	}
	if lim.pendingLocked() < lim.maxPending() {
		return 0, lim.freed
	}
	_, wait := lim.victim(time.Now())
	return wait, lim.freed
}

// victim is the pending connection to close for a new one at the total
// cap: the oldest silent one once MinSilentAge old, else the oldest
// talking one once MinPendingAge old. Without one, it returns how long
// until there is one. lim.mu is held.
func (lim *Limiter) victim(now time.Time) (*conn, time.Duration) {
	wait := time.Duration(math.MaxInt64)
	for _, q := range []struct {
		l      *list.List
		minAge time.Duration
	}{{&lim.silent, orDefault(lim.MinSilentAge, DefaultMinSilentAge)}, {&lim.talking, orDefault(lim.MinPendingAge, DefaultMinPendingAge)}} {
		for f := q.l.Front(); f != nil; f = q.l.Front() {
			c := f.Value.(*conn)
			left := q.minAge - now.Sub(c.at)
			if left > 0 {
				wait = min(wait, left)
				break
			}
			if q.l == &lim.silent && peek.Unread(c.Conn) {
				// It has spoken; this master has not read it yet (a
				// storm of real slaves on a busy master): not silent.
				lim.silent.Remove(f)
				c.elem, c.talking = lim.talking.PushBack(c), true
				continue
			}
			return c, 0
		}
	}
	return nil, wait
}

// pendingLocked counts the pending connections; lim.mu is held.
func (lim *Limiter) pendingLocked() int { return lim.silent.Len() + lim.talking.Len() }

// Pending counts the connections accepted and not yet admitted or closed.
func (lim *Limiter) Pending() int {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	return lim.pendingLocked()
}

// Listen wraps l: its connections count as pending until Admit or Close,
// and an accept error that running out of file descriptors (EMFILE,
// ENFILE) or another temporary condition causes is waited out with a
// growing delay (5 ms doubling to 1 s) instead of returned, so that the
// caller's accept loop neither spins nor logs each one. Closing the
// returned listener closes l.
func (lim *Limiter) Listen(l net.Listener) net.Listener {
	return &listener{Listener: l, lim: lim, done: make(chan struct{})}
}

// Admit marks c, a connection accepted from a Limiter's listener (or a
// *tls.Conn or other wrapper over one, through its NetConn method), as
// authenticated: it no longer counts against the caps. It reports
// whether c was pending.
func Admit(c net.Conn) bool {
	for {
		switch cc := c.(type) {
		case *conn:
			return cc.lim.remove(cc)
		case interface{ NetConn() net.Conn }:
			c = cc.NetConn()
		default:
			return false
		}
	}
}

// ipKey is what the per-address cap counts by: the IP address, and for
// IPv6 its /64 prefix, which one host usually owns whole.
func ipKey(a net.Addr) netip.Prefix {
	var ip netip.Addr
	if tcp, ok := a.(*net.TCPAddr); ok {
		ip = tcp.AddrPort().Addr()
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		ip = ap.Addr()
	}
	ip = ip.Unmap().WithZone("")
	bits := ip.BitLen()
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// accepted counts a new connection, or closes it if its address is over
// its cap; it closes the oldest pending connection if the total is.
func (lim *Limiter) accepted(nc net.Conn) net.Conn {
	key := ipKey(nc.RemoteAddr())
	log := lim.logger()
	lim.mu.Lock()
	if lim.perIP == nil {
		lim.perIP = make(map[netip.Prefix]*ipCount)
	}
	n := lim.perIP[key]
	if n == nil {
		n = &ipCount{}
		lim.perIP[key] = n
	}
	if n.pending >= lim.maxPerIP() {
		n.refused++
		first := n.refused == 1
		lim.mu.Unlock()
		nc.Close()
		if first {
			log.Warn("connections from one address over their cap before login; closing new ones",
				"remote", key.String(), "cap", lim.maxPerIP())
		}
		return nil
	}
	n.pending++
	var oldest *conn
	var changes []change
	if lim.pendingLocked() >= lim.maxPending() {
		// roomIn found a victim; if it has gone since, the oldest makes room.
		if oldest, _ = lim.victim(time.Now()); oldest == nil {
			oldest = cmp.Or(lim.silent.Front(), lim.talking.Front()).Value.(*conn)
		}
		changes = lim.removeLocked(oldest)
		lim.evicted++
	}
	reached := oldest != nil && !lim.full
	lim.full = lim.full || reached
	c := &conn{Conn: nc, lim: lim, key: key, at: time.Now()}
	c.elem = lim.silent.PushBack(c)
	lim.mu.Unlock()
	if oldest != nil {
		oldest.Conn.Close()
	}
	lim.log(changes)
	if reached {
		log.Warn("connections before login at their cap; closing the oldest to make room", "cap", lim.maxPending())
	}
	return c
}

// remove stops counting c, if it still counted, and reports whether it
// did. The total cap stops closing connections once down to three
// quarters of it.
func (lim *Limiter) remove(c *conn) bool {
	lim.mu.Lock()
	var changes []change
	was := c.elem != nil
	if was {
		changes = lim.removeLocked(c)
		select {
		case lim.freed <- struct{}{}:
		default:
		}
	}
	if lim.full && lim.pendingLocked() <= lim.maxPending()*3/4 {
		changes = append(changes, change{"connections before login back under their cap", []any{"closed", lim.evicted}})
		lim.full, lim.evicted = false, 0
	}
	lim.mu.Unlock()
	lim.log(changes)
	return was
}

// change is a line to log about a cap that stopped closing connections.
type change struct {
	msg  string
	args []any
}

// removeLocked stops counting c, and returns the line to log if its
// address's cap stops closing connections: once the address has no
// pending connection left. lim.mu is held.
func (lim *Limiter) removeLocked(c *conn) []change {
	var changes []change
	if c.talking {
		lim.talking.Remove(c.elem)
	} else {
		lim.silent.Remove(c.elem)
	}
	c.elem = nil
	n := lim.perIP[c.key]
	n.pending--
	if n.pending == 0 {
		delete(lim.perIP, c.key)
		if n.refused > 0 {
			changes = append(changes, change{"connections from one address back under their cap before login",
				[]any{"remote", c.key.String(), "closed", n.refused}})
		}
	}
	return changes
}

func (lim *Limiter) log(changes []change) {
	for _, ch := range changes {
		lim.logger().Info(ch.msg, ch.args...)
	}
}

// conn is an accepted connection; it counts as pending while elem is set.
type conn struct {
	net.Conn
	lim     *Limiter
	key     netip.Prefix
	at      time.Time     // when it was accepted
	heard   atomic.Bool   // it has sent something
	elem    *list.Element // in lim.silent or lim.talking; under lim.mu
	talking bool          // elem is in lim.talking; under lim.mu
}

// SyscallConn is the accepted connection's, so that a reader can wait
// for its bytes on the file descriptor: this wrapper buffers nothing.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// Read reads from the connection; its first bytes make a pending
// connection a talking one.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.heard.Load() {
		c.heard.Store(true)
		c.lim.talked(c)
	}
	return n, err
}

// talked moves c, if pending, from lim.silent to lim.talking.
func (lim *Limiter) talked(c *conn) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if c.elem != nil && !c.talking {
		lim.silent.Remove(c.elem)
		c.elem, c.talking = lim.talking.PushBack(c), true
	}
}

// Close stops counting c and closes it.
func (c *conn) Close() error {
	c.lim.remove(c)
	return c.Conn.Close()
}

// listener is a Limiter's wrapper of one listener.
type listener struct {
	net.Listener
	lim       *Limiter
	done      chan struct{} // closed by Close: ends a back-off
	closeOnce sync.Once
}

// Accept returns the next connection that the caps let through, waiting
// out accept errors such as EMFILE with a growing delay.
func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	failures := 0
	for {
		if err := l.waitForRoom(); err != nil {
			return nil, err
		}
		nc, err := l.Listener.Accept()
		if err != nil {
			if !retryable(err) {
				return nil, err
			}
			failures++
			if failures == 1 {
				l.lim.logger().Warn("accept failing; retrying with a back-off", "addr", l.Addr().String(), "err", err.Error())
			}
			delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done: // the next Accept returns the closed listener's error
				t.Stop()
			}
			continue
		}
		if failures > 0 {
			l.lim.logger().Info("accept works again", "addr", l.Addr().String(), "failures", failures)
			failures, delay = 0, 0
		}
		if c := l.lim.accepted(nc); c != nil {
			return c, nil
		}
	}
}

// waitForRoom waits, while the total cap is reached by connections young
// enough to be logging in, for one of them to log in, end, or grow old
// enough to make room; the kernel's backlog holds new ones meanwhile.
func (l *listener) waitForRoom() error {
	for {
		wait, freed := l.lim.roomIn()
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-freed:
		case <-t.C:
		case <-l.done:
			t.Stop()
			return net.ErrClosed
		}
		t.Stop()
	}
}

// Close closes the listener and ends a back-off in Accept.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// retryable reports whether an accept error is worth waiting out: out of
// file descriptors or buffers, whether or not the error says it is
// temporary, and any other error that says so.
func retryable(err error) bool {
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
