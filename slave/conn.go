package slave

import (
	"context"
	"maps"
)

// Conn is the manager's view of one attached slave connection. The manager
// is transport-neutral: the protocol package implements Conn over
// Buildbot's msgpack WebSocket protocol, and slavetest implements it in
// memory for tests.
//
// Methods that talk to the slave take a context and return when the slave
// has answered, the context is done, or the connection is lost. They must be
// safe for concurrent use.
type Conn interface {
	// Context is cancelled when the connection is lost or closed;
	// context.Cause says why. The manager watches it to detach the slave.
	Context() context.Context
	// Keepalive sends a keepalive message and waits for its reply.
	Keepalive(ctx context.Context) error
	// Print asks the slave to print a message and waits for its
	// acknowledgement; the manager uses it as a ping.
	Print(ctx context.Context, message string) error
	// RequestShutdown asks the slave process to shut itself down.
	RequestShutdown(ctx context.Context) error
	// Close drops the connection. It does not wait for the peer.
	Close() error
	// Info is what the slave reported about itself when it attached. The
	// manager keeps it as it is: its maps must never change afterwards
	// (they may be shared between connections).
	Info() Info
	// RemoteAddr is the peer's address, for logs and status.
	RemoteAddr() string
}

// AliveReporter is implemented by a Conn whose slave sends signs of life
// of its own, such as a Perspective Broker slave's keepalives: the manager
// counts each one as seen, as it does a reply to its own keepalive.
type AliveReporter interface {
	// OnAlive has f called at each sign of life from now on.
	OnAlive(f func())
}

// Info is what a slave reports about itself when it attaches: the contents
// of its info/ directory (admin, host, ...) and facts about its machine.
type Info struct {
	Admin    string            // the admin file: who runs this slave
	Host     string            // the host file: a description of the machine
	Access   string            // the access_uri file, if any
	OS       string            // a pretty name of the operating system, if known
	NumCPUs  int               // CPUs the slave sees
	Version  string            // the slave software's version
	Basedir  string            // the slave's base directory
	Commands map[string]string // remote commands the slave supports, with versions
	Extra    map[string]string // any other string fields the slave reported
}

// clone returns a deep copy of info, so callers cannot change the manager's state.
func (info Info) clone() Info {
	info.Commands = maps.Clone(info.Commands)
	info.Extra = maps.Clone(info.Extra)
	return info
}
