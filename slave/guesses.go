package slave

import (
	"container/list"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the zero values of Config's limits on refused logins.
const (
	// DefaultRefusalBurst is how many refused logins a remote address may
	// make in a row.
	DefaultRefusalBurst = 10
	// DefaultRefusalInterval is how often an address earns back one
	// refused login, and its first back-off.
	DefaultRefusalInterval = time.Second
	// DefaultRefusalBackoff caps the back-off of an address that keeps
	// running out of refused logins.
	DefaultRefusalBackoff = time.Minute
	// DefaultRefusalAddresses caps how many remote addresses the manager
	// keeps a count of.
	DefaultRefusalAddresses = 10000
)

// summaryWindow is how long the refusals that follow a logged one are
// counted before one line reports them.
const summaryWindow = time.Minute

// addrKey is what refused logins are counted by: the IP address of
// remoteAddr without its port, and for IPv6 its /64 prefix, which one
// host usually owns whole. An address that is not IP:port counts as
// itself.
func addrKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// refusals is the manager's account of refused logins per remote address:
// a token bucket of refusals with back-off, and the summary of their log
// lines. It has its own mutex, taken after m.mu if both are held, and
// nothing waits under it. Each address's record goes through these
// states:
//
//	      refusal                       bucket empty
//	new ───────────▶ spending ─────────────────────▶ blocked
//	 ▲                │   ▲                             │
//	 │ bucket full,   │   └──── back-off over ──────────┘
//	 │ nothing to log │
//	 └── (forgotten) ◀┘
//
// A record is also forgotten, least recently used first, when the table
// is full.
type refusals struct {
	burst      float64 // negative: no limit
	interval   time.Duration
	maxBackoff time.Duration
	max        int
	log        *slog.Logger

	mu     sync.Mutex
	addrs  map[string]*addrRecord
	lru    list.List // of *addrRecord, least recently used first
	closed bool
	wg     sync.WaitGroup // summary timers that are armed or running
}

// addrRecord is one remote address's refusals.
type addrRecord struct {
	key     string
	elem    *list.Element
	tokens  float64   // refusals the address may still make, as of at
	at      time.Time // in the future while blocked: the bucket refills from then
	backoff time.Duration
	until   time.Time // blocked until

	window    time.Time   // start of the minute whose refusals are summarised
	count     int         // refusals in the window not yet logged
	unchecked int         // of those, the ones refused without a check
	timer     *time.Timer // logs them at the window's end; set while count > 0
}

// summary is one line to log about an address's refusals.
type summary struct {
	key              string
	count, unchecked int
}

func newRefusals(cfg Config, log *slog.Logger) *refusals {
	r := &refusals{
		burst:      float64(cfg.RefusalBurst),
		interval:   cfg.RefusalInterval,
		maxBackoff: cfg.RefusalBackoff,
		max:        cfg.RefusalAddresses,
		log:        log,
		addrs:      make(map[string]*addrRecord),
	}
	if cfg.RefusalBurst == 0 {
		r.burst = DefaultRefusalBurst
	}
	if r.interval <= 0 {
		r.interval = DefaultRefusalInterval
	}
	if r.maxBackoff <= 0 {
		r.maxBackoff = DefaultRefusalBackoff
	}
	if r.max <= 0 {
		r.max = DefaultRefusalAddresses
	}
	return r
}

// take decides whether a login from key may be checked. An address with
// no recent refusal is checked whatever its concurrency (a storm of
// slaves behind one NAT); from an address with a record, each check
// holds one refusal of its budget (reserved) until refund gives it back
// for a login that passed, so that concurrent guesses cannot overdraw
// it. blocks is true when this login starts a block: the address just
// ran out.
func (r *refusals) take(key string) (ok, reserved, blocks bool) {
	if r.burst < 0 {
		return true, false, false
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.addrs[key]
	switch {
	case a == nil:
		return true, false, false
	case now.Before(a.until):
		r.lru.MoveToBack(a.elem)
		return false, false, false
	}
	r.lru.MoveToBack(a.elem)
	r.refill(a, now)
	if a.tokens < 1 {
		a.backoff = min(max(2*a.backoff, r.interval), r.maxBackoff)
		a.until = now.Add(a.backoff)
		a.tokens, a.at = 1, a.until // one more login once the back-off is over
		return false, false, true
	}
	a.tokens--
	return true, true, false
}

// refund gives back what take reserved, for a login that passed.
func (r *refusals) refund(key string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.addrs[key]
	if a == nil {
		return // forgotten meanwhile
	}
	a.tokens = min(a.tokens+1, r.burst)
	if r.idle(a, now) {
		r.forget(a)
	}
}

// note counts a refusal from key and reports whether to log it at once:
// the first one from an address is, and the others that follow it
// within a minute are counted and logged as one line at the minute's
// end. spend takes the refusal from the budget, for a login checked
// without a reservation; checked says whether the login was checked.
func (r *refusals) note(key string, checked, spend bool) (logNow bool) {
	now := time.Now()
	r.mu.Lock()
	a, evicted := r.record(key, now)
	if spend && r.burst >= 0 {
		r.refill(a, now)
		a.tokens--
	}
	if a.window.IsZero() || !now.Before(a.window.Add(summaryWindow)) {
		a.window = now
		logNow = true
	} else {
		a.count++
		if !checked {
			a.unchecked++
		}
		if a.timer == nil && !r.closed {
			r.wg.Add(1)
			a.timer = time.AfterFunc(a.window.Add(summaryWindow).Sub(now), func() { r.flush(a) })
		}
	}
	r.mu.Unlock()
	r.logSummary(evicted)
	return logNow
}

// flush logs a's summary at the end of its window; it runs on a's timer.
// The next minute's refusals are counted too, so a steady guesser costs
// one line a minute.
func (r *refusals) flush(a *addrRecord) {
	defer r.wg.Done()
	r.mu.Lock()
	if a.timer == nil { // stopped too late by forget or close, which logged it
		r.mu.Unlock()
		return
	}
	s := r.stopSummary(a)
	a.window = time.Now()
	r.mu.Unlock()
	r.logSummary(s)
}

// record returns key's record, created if need be, and marks it used.
// Making room forgets idle records first, then the least recently used
// one, whose summary it returns, to be logged once r.mu is released.
// r.mu is held.
func (r *refusals) record(key string, now time.Time) (*addrRecord, *summary) {
	if a := r.addrs[key]; a != nil {
		r.lru.MoveToBack(a.elem)
		return a, nil
	}
	for r.lru.Len() > 0 && r.idle(r.lru.Front().Value.(*addrRecord), now) {
		r.forget(r.lru.Front().Value.(*addrRecord))
	}
	var evicted *summary
	if r.lru.Len() >= r.max {
		old := r.lru.Front().Value.(*addrRecord)
		evicted = r.stopSummary(old)
		r.forget(old)
	}
	a := &addrRecord{key: key, tokens: max(r.burst, 0), at: now}
	a.elem = r.lru.PushBack(a)
	r.addrs[key] = a
	return a, evicted
}

// refill adds the refusals a has earned since a.at; a full bucket ends
// the back-off. r.mu is held.
func (r *refusals) refill(a *addrRecord, now time.Time) {
	if now.After(a.at) {
		a.tokens = min(a.tokens+float64(now.Sub(a.at))/float64(r.interval), r.burst)
		a.at = now
	}
	if a.tokens >= r.burst {
		a.backoff = 0
	}
}

// idle reports whether forgetting a changes nothing: its bucket is full
// and it has nothing left to log. r.mu is held.
func (r *refusals) idle(a *addrRecord, now time.Time) bool {
	if now.Before(a.until) || a.count > 0 || (!a.window.IsZero() && now.Before(a.window.Add(summaryWindow))) {
		return false
	}
	r.refill(a, now)
	return a.tokens >= r.burst || r.burst < 0
}

// forget drops a; its summary must have been taken. r.mu is held.
func (r *refusals) forget(a *addrRecord) {
	r.lru.Remove(a.elem)
	delete(r.addrs, a.key)
}

// stopSummary stops a's timer and returns what it had yet to log, if
// anything. r.mu is held.
func (r *refusals) stopSummary(a *addrRecord) *summary {
	if a.timer != nil && a.timer.Stop() {
		r.wg.Done() // the timer will never run
	}
	a.timer = nil
	if a.count == 0 {
		return nil
	}
	s := &summary{key: a.key, count: a.count, unchecked: a.unchecked}
	a.count, a.unchecked = 0, 0
	return s
}

// logSummary logs s, if any.
func (r *refusals) logSummary(s *summary) {
	if s == nil {
		return
	}
	r.log.Warn(fmt.Sprintf("%d refusals from %s in the last minute", s.count, s.key),
		"remote", s.key, "refusals", s.count, "unchecked", s.unchecked)
}

// close stops every timer, logs what they had yet to log and waits for
// any that is running.
func (r *refusals) close() {
	r.mu.Lock()
	r.closed = true
	var pending []*summary
	for _, a := range r.addrs {
		if s := r.stopSummary(a); s != nil {
			pending = append(pending, s)
		}
	}
	r.mu.Unlock()
	for _, s := range pending {
		r.logSummary(s)
	}
	r.wg.Wait()
}
