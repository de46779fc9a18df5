// Package limit logs the example master's limits when they are hit: the
// first hit of each at once, then at most one line per Interval that
// counts the hits it did not log, so that a flood of refused requests
// costs the log a line a minute.
package limit

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Interval is the least time between two lines about the same limit.
const Interval = time.Minute

// Log logs the hits of limits. Its methods are safe for concurrent use.
type Log struct {
	log *slog.Logger

	mu   sync.Mutex
	last map[string]*hits // by the limit's configuration key
}

// hits is what Log knows of one limit.
type hits struct {
	logged  time.Time // when its last line was written
	skipped int       // hits since then, not logged
}

// New returns a Log that writes to log; nil means slog.Default().
func New(log *slog.Logger) *Log {
	if log == nil {
		log = slog.Default()
	}
	return &Log{log: log, last: map[string]*hits{}}
}

// Hit records a hit of the limit named by its configuration key (such as
// "master.http_max_body"), whose value is value: it logs msg with args,
// the limit and its value, unless it logged this limit less than
// Interval ago; the next line then says how many hits it did not log.
func (l *Log) Hit(key string, value any, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	h := l.last[key]
	if h == nil {
		h = &hits{}
		l.last[key] = h
	} else if now.Sub(h.logged) < Interval {
		h.skipped++
		l.mu.Unlock()
		return
	}
	skipped := h.skipped
	h.logged, h.skipped = now, 0
	l.mu.Unlock()
	args = append(args, "limit", key, "limit_value", value)
	if skipped > 0 {
		args = append(args, "hits_not_logged", skipped)
	}
	l.log.Warn(msg, args...)
}

// Bytes writes a size for people: "64 KiB" when it is a whole number of
// KiB, MiB, GiB or TiB, else "N bytes".
func Bytes(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
