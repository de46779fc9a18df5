// Package builds runs the example master's builds: a builder's steps in
// order on a build slot of one of its slaves, a bounded history of the
// results with each step's output, the schedulers that start builds and
// the HTTP endpoint that forces them.
package builds

import "time"

// Builder is a named list of steps run on one of its slaves.
type Builder struct {
	Name   string
	Slaves []string // any of these; an idle one first
	Steps  []Step
}

// Step is a shell step (Shell set) or an upload step (Upload set).
type Step struct {
	Name string
	// Shell is run as /bin/sh -c Shell in the builder's workdir on the
	// slave, <basedir>/<builder>/build.
	Shell string
	// Upload is a file of the slave, relative to the workdir, copied to
	// the build's upload directory on the master.
	Upload string
	// MaxUploadSize bounds the upload's bytes; 0 means the Runner's
	// Limits.MaxUploadSize.
	MaxUploadSize int64
	// Env is added to the shell step's environment.
	Env map[string]string
	// Timeout ends a shell step that prints nothing for that long.
	Timeout time.Duration
}

// Schedule starts builds of Builder: every Every (if positive) and once
// when the master starts (AtStart).
type Schedule struct {
	Builder string
	Every   time.Duration
	AtStart bool
}

// DefaultStepTimeout is a shell step's timeout unless it sets one: the
// stock master's 1200 s without output.
const DefaultStepTimeout = 20 * time.Minute

// Limits bound what builds may make the master hold; a zero field means
// its default.
type Limits struct {
	// MaxUploadSize bounds an upload step's file unless the step sets its
	// own: sent to the slave as maxsize, and enforced by the master's
	// writer whatever the slave sends.
	MaxUploadSize int64
	// MaxPrintedOutput bounds the bytes of a build's output printed as
	// progress lines; the rest is counted, and the status page keeps each
	// step's tail.
	MaxPrintedOutput int64
	// MaxQueuedBuilds bounds the builds of one builder waiting for a
	// slave; Force refuses more with ErrQueueFull.
	MaxQueuedBuilds int
	// MaxReasonLength bounds the bytes of a build's reason; Force refuses
	// a longer one with ErrReasonTooLong.
	MaxReasonLength int
}

// Defaults of Limits.
const (
	DefaultMaxUploadSize    = 1 << 30
	DefaultMaxPrintedOutput = 64 << 10
	DefaultMaxQueuedBuilds  = 50
	DefaultMaxReasonLength  = 1 << 10
)

// withDefaults returns l with its zero fields set to their defaults.
func (l Limits) withDefaults() Limits {
	if l.MaxUploadSize <= 0 {
		l.MaxUploadSize = DefaultMaxUploadSize
	}
	if l.MaxPrintedOutput <= 0 {
		l.MaxPrintedOutput = DefaultMaxPrintedOutput
	}
	if l.MaxQueuedBuilds <= 0 {
		l.MaxQueuedBuilds = DefaultMaxQueuedBuilds
	}
	if l.MaxReasonLength <= 0 {
		l.MaxReasonLength = DefaultMaxReasonLength
	}
	return l
}
