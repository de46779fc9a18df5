package slave

import (
	"log/slog"

	"github.com/buildslave/buildslave/internal/guess"
)

// Defaults for the zero values of Config's limits on refused logins.
const (
	// DefaultRefusalBurst is how many refused logins a remote address may
	// make in a row.
	DefaultRefusalBurst = guess.DefaultBurst
	// DefaultRefusalInterval is how often an address earns back one
	// refused login, and its first back-off.
	DefaultRefusalInterval = guess.DefaultInterval
	// DefaultRefusalBackoff caps the back-off of an address that keeps
	// running out of refused logins.
	DefaultRefusalBackoff = guess.DefaultBackoff
	// DefaultRefusalAddresses caps how many remote addresses the manager
	// keeps a count of.
	DefaultRefusalAddresses = guess.DefaultAddresses
)

// newRefusals returns the manager's account of refused logins per remote
// address, within cfg's limits. It has its own mutex, taken after m.mu if
// both are held.
func newRefusals(cfg Config, log *slog.Logger) *guess.Table {
	return guess.New(guess.Config{Burst: cfg.RefusalBurst, Interval: cfg.RefusalInterval,
		Backoff: cfg.RefusalBackoff, Addresses: cfg.RefusalAddresses}, log)
}
