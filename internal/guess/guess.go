// Package guess makes refused credentials cost the guesser: a token
// bucket of refusals per remote address with back-off, and log lines that
// summarise a burst of refusals instead of one line per guess. The slave
// manager's logins and the example master's web port each keep a Table.
package guess

import (
	"container/list"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults for the zero fields of Config.
const (
	// DefaultBurst is how many refusals a remote address may earn in a
	// row.
	DefaultBurst = 10
	// DefaultInterval is how often an address earns back one refusal,
	// and its first back-off.
	DefaultInterval = time.Second
	// DefaultBackoff caps the back-off of an address that keeps running
	// out of refusals.
	DefaultBackoff = time.Minute
	// DefaultAddresses caps how many remote addresses a Table keeps a
	// count of.
	DefaultAddresses = 10000
)

// Config sets a Table's limits; zero fields mean their defaults.
type Config struct {
	// Burst is how many refusals one remote address may earn in a row;
	// then it earns one more per Interval, and while it has none left its
	// attempts are refused at once, without a check: the first time for
	// Interval, then for twice as long each time it runs out again, up to
	// Backoff, until it has its whole burst back. Negative turns the
	// limit off.
	Burst int
	// Interval is how often an address earns back a refusal, and its
	// first back-off.
	Interval time.Duration
	// Backoff caps the back-off.
	Backoff time.Duration
	// Addresses caps how many remote addresses are counted; beyond it,
	// the least recently seen one is forgotten (its pending summary is
	// logged).
	Addresses int
}

// summaryWindow is how long the refusals that follow a logged one are
// counted before one line reports them.
const summaryWindow = time.Minute

// Key is what refusals are counted by: the IP address of
// remoteAddr without its port, and for IPv6 its /64 prefix, which one
// host usually owns whole. An address that is not IP:port counts as
// itself.
func Key(remoteAddr string) string {
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

// Table is an account of refused attempts per remote address (by Key): a
// token bucket of refusals with back-off, and the summary of their log
// lines. Its methods are safe for concurrent use, and nothing waits under
// its mutex. Each address's record goes through these
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
type Table struct {
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

// New returns a Table with cfg's limits that logs its summaries to log.
func New(cfg Config, log *slog.Logger) *Table {
	r := &Table{
		burst:      float64(cfg.Burst),
		interval:   cfg.Interval,
		maxBackoff: cfg.Backoff,
		max:        cfg.Addresses,
		log:        log,
		addrs:      make(map[string]*addrRecord),
	}
	if cfg.Burst == 0 {
		r.burst = DefaultBurst
	}
	if r.interval <= 0 {
		r.interval = DefaultInterval
	}
	if r.maxBackoff <= 0 {
		r.maxBackoff = DefaultBackoff
	}
	if r.max <= 0 {
		r.max = DefaultAddresses
	}
	return r
}

// Ticket is Take's answer about one attempt.
type Ticket struct {
	// OK says the attempt may be checked.
	OK bool
	// Reserved says the check holds one refusal of the address's budget:
	// Refund it when the credential is right.
	Reserved bool
	// Blocks says this attempt starts a block: the address just ran out.
	Blocks bool
	// RetryAfter is, for an attempt refused unchecked, how long the
	// address's block lasts from now.
	RetryAfter time.Duration
}

// Take decides whether an attempt from key may be checked. An address
// with no recent refusal is checked whatever its concurrency (a storm of
// slaves behind one NAT); from an address with a record, each check
// holds one refusal of its budget (Reserved) until Refund gives it back
// for an attempt that passed, so that concurrent guesses cannot
// overdraw it.
func (r *Table) Take(key string) Ticket {
	if r.burst < 0 {
		return Ticket{OK: true}
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.addrs[key]
	switch {
	case a == nil:
		return Ticket{OK: true}
	case now.Before(a.until):
		r.lru.MoveToBack(a.elem)
		return Ticket{RetryAfter: a.until.Sub(now)}
	}
	r.lru.MoveToBack(a.elem)
	r.refill(a, now)
	if a.tokens < 1 {
		a.backoff = min(max(2*a.backoff, r.interval), r.maxBackoff)
		a.until = now.Add(a.backoff)
		a.tokens, a.at = 1, a.until // one more attempt once the back-off is over
		return Ticket{Blocks: true, RetryAfter: a.backoff}
	}
	a.tokens--
	return Ticket{OK: true, Reserved: true}
}

// Refund gives back what Take reserved, for an attempt that passed.
func (r *Table) Refund(key string) {
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

// Note counts a refusal from key and reports whether to log it at once:
// the first one from an address is, and the others that follow it
// within a minute are counted and logged as one line at the minute's
// end ("N refusals from KEY in the last minute"). spend takes the
// refusal from the budget, for an attempt checked without a reservation;
// checked says whether the attempt was checked.
func (r *Table) Note(key string, checked, spend bool) (logNow bool) {
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
func (r *Table) flush(a *addrRecord) {
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
func (r *Table) record(key string, now time.Time) (*addrRecord, *summary) {
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
func (r *Table) refill(a *addrRecord, now time.Time) {
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
func (r *Table) idle(a *addrRecord, now time.Time) bool {
	if now.Before(a.until) || a.count > 0 || (!a.window.IsZero() && now.Before(a.window.Add(summaryWindow))) {
		return false
	}
	r.refill(a, now)
	return a.tokens >= r.burst || r.burst < 0
}

// forget drops a; its summary must have been taken. r.mu is held.
func (r *Table) forget(a *addrRecord) {
	r.lru.Remove(a.elem)
	delete(r.addrs, a.key)
}

// stopSummary stops a's timer and returns what it had yet to log, if
// anything. r.mu is held.
func (r *Table) stopSummary(a *addrRecord) *summary {
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
func (r *Table) logSummary(s *summary) {
	if s == nil {
		return
	}
	r.log.Warn(fmt.Sprintf("%d refusals from %s in the last minute", s.count, s.key),
		"remote", s.key, "refusals", s.count, "unchecked", s.unchecked)
}

// Close stops every timer, logs what they had yet to log and waits for
// any that is running.
func (r *Table) Close() {
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
