package slave

import (
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"slices"
	"strings"
	"time"
)

// Defaults from the Buildbot 0.8.6 BuildSlave options.
const (
	// DefaultKeepaliveInterval is how often the master sends a keepalive.
	DefaultKeepaliveInterval = time.Hour
	// DefaultMissingTimeout is how long a slave may be gone before
	// notify_on_missing is told.
	DefaultMissingTimeout = 3600 * time.Second
)

// Disabled, given to KeepaliveInterval, turns keepalives off: Buildbot
// 0.8.6's keepalive_interval=None.
const Disabled time.Duration = -1

// Slave is the configuration of one build slave: Buildbot 0.8.6's
// BuildSlave(name, password, ...). Build one with New; a Slave is immutable
// once built, so it is safe to share.
type Slave struct {
	name              string
	password          string
	properties        map[string]any
	maxBuilds         int
	keepaliveInterval time.Duration
	notifyOnMissing   []string
	missingTimeout    time.Duration
	missingTimeoutSet bool // MissingTimeout was given
}

// Option sets one of a Slave's optional settings; each is named after
// BuildSlave's keyword argument in Buildbot 0.8.6's manual.
type Option func(*Slave)

// Properties sets properties that are available to every build on this
// slave (properties=). The map is copied.
func Properties(p map[string]any) Option {
	return func(s *Slave) { s.properties = maps.Clone(p) }
}

// MaxBuilds limits how many builds the slave runs at once (max_builds=);
// 0, the default, means no limit.
func MaxBuilds(n int) Option {
	return func(s *Slave) { s.maxBuilds = n }
}

// KeepaliveInterval sets how often the master sends a keepalive
// (keepalive_interval=); Disabled turns keepalives off.
func KeepaliveInterval(d time.Duration) Option {
	return func(s *Slave) { s.keepaliveInterval = d }
}

// NotifyOnMissing sets who is mailed when the slave has been missing for
// its missing timeout (notify_on_missing=): one address or several.
func NotifyOnMissing(addresses ...string) Option {
	return func(s *Slave) { s.notifyOnMissing = slices.Clone(addresses) }
}

// MissingTimeout sets how long the slave may be disconnected before
// notify_on_missing is told (missing_timeout=).
func MissingTimeout(d time.Duration) Option {
	return func(s *Slave) { s.missingTimeout, s.missingTimeoutSet = d, true }
}

// New builds a Slave from a name and a password plus options, and
// validates it. The error names the offending field.
func New(name, password string, opts ...Option) (*Slave, error) {
	s := &Slave{
		name:              name,
		password:          password,
		keepaliveInterval: DefaultKeepaliveInterval,
		missingTimeout:    DefaultMissingTimeout,
	}
	for _, o := range opts {
		o(s)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// ConfigError is an invalid slave configuration. Field is the setting's
// name in Buildbot 0.8.6's manual (name, password, max_builds, ...).
type ConfigError struct {
	Slave  string
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	if e.Slave == "" {
		return fmt.Sprintf("slave: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("slave %q: %s: %s", e.Slave, e.Field, e.Reason)
}

func (s *Slave) validate() error {
	bad := func(field, reason string) error {
		return &ConfigError{Slave: s.name, Field: field, Reason: reason}
	}
	var errs []error
	switch {
	case s.name == "":
		errs = append(errs, bad("name", "must not be empty"))
	case strings.ContainsRune(s.name, ':'):
		errs = append(errs, bad("name", "must not contain ':' (it travels in HTTP Basic auth)"))
	case strings.ContainsFunc(s.name, func(r rune) bool { return r < ' ' || r == 0x7f }):
		errs = append(errs, bad("name", "must not contain control characters"))
	}
	if s.password == "" {
		errs = append(errs, bad("password", "must not be empty"))
	}
	if s.maxBuilds < 0 {
		errs = append(errs, bad("max_builds", fmt.Sprintf("must not be negative, got %d", s.maxBuilds)))
	}
	if s.keepaliveInterval <= 0 && s.keepaliveInterval != Disabled {
		errs = append(errs, bad("keepalive_interval", fmt.Sprintf("must be positive or slave.Disabled, got %v", s.keepaliveInterval)))
	}
	if s.missingTimeout <= 0 {
		errs = append(errs, bad("missing_timeout", fmt.Sprintf("must be positive, got %v", s.missingTimeout)))
	}
	for _, a := range s.notifyOnMissing {
		if addr, err := mail.ParseAddress(a); err != nil || addr.Name != "" || addr.Address != a {
			errs = append(errs, bad("notify_on_missing", fmt.Sprintf("%q is not an e-mail address", a)))
		}
	}
	return errors.Join(errs...)
}

// Name is the slave's name, unique within a manager.
func (s *Slave) Name() string { return s.name }

// Properties returns a copy of the slave's properties, with "slavename"
// set to its name as Buildbot does.
func (s *Slave) Properties() map[string]any {
	p := make(map[string]any, len(s.properties)+1)
	maps.Copy(p, s.properties)
	p["slavename"] = s.name
	return p
}

// MaxBuilds is the most builds the slave runs at once; 0 means no limit.
func (s *Slave) MaxBuilds() int { return s.maxBuilds }

// KeepaliveInterval is how often a keepalive is sent, or Disabled.
func (s *Slave) KeepaliveInterval() time.Duration { return s.keepaliveInterval }

// NotifyOnMissing returns a copy of the addresses told when the slave goes missing.
func (s *Slave) NotifyOnMissing() []string { return slices.Clone(s.notifyOnMissing) }

// MissingTimeout is how long the slave may be gone before it counts as missing.
func (s *Slave) MissingTimeout() time.Duration { return s.missingTimeout }

// MissingTimeoutSet reports whether the MissingTimeout option was given.
// When it was not, a latent slave's Lifecycle waits for an instance's
// attach for its own default, 20 minutes, where a static slave's is an hour.
func (s *Slave) MissingTimeoutSet() bool { return s.missingTimeoutSet }

// String names the slave; it never shows the password.
func (s *Slave) String() string { return "slave " + s.name }
