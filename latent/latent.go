// Package latent starts build slaves' machines on demand and stops them
// after use: the LatentSlave interface that drivers such as ec2 and
// libvirt implement, and the Lifecycle that drives them through the slave
// manager without ever leaking an instance.
package latent

import (
	"context"
	"time"

	"github.com/buildslave/buildslave/slave"
)

// Defaults of a latent slave's timeouts, from the seed's EC2 section,
// which the ec2 and libvirt drivers both use.
const (
	// DefaultMissingTimeout is how long a started instance may take to
	// attach (missing_timeout), where a normal slave's default is an hour.
	DefaultMissingTimeout = 20 * time.Minute
	// DefaultBuildWaitTimeout is how long an idle instance is kept after
	// its last build (build_wait_timeout).
	DefaultBuildWaitTimeout = 10 * time.Minute
)

// LatentSlave is a slave whose machine (an instance) the master starts
// when a build wants it and stops after use. Its Slave carries the name,
// the password and every option of a normal slave.
//
// Start and Stop are called by the Lifecycle only, never concurrently for
// one LatentSlave, and at most one instance of a LatentSlave is running at
// any time.
type LatentSlave interface {
	// Slave is the slave's configuration.
	Slave() *slave.Slave
	// BuildWaitTimeout is how long an idle instance is kept after its last
	// build: 0 stops it right after each build, a negative value keeps it
	// until the Lifecycle shuts down.
	BuildWaitTimeout() time.Duration
	// Start starts one instance that will attach to the master as this
	// slave with req's password, and returns once the start is under way
	// (not once it has attached). On error nothing may be left running.
	Start(ctx context.Context, req StartRequest) (Instance, error)
	// Stop stops the instance and removes what was made for it (disk
	// clones, transient domains, address associations). Stopping an
	// instance that is already gone is not an error.
	Stop(ctx context.Context, inst Instance) error
}

// StartRequest is what a driver needs to start an instance.
type StartRequest struct {
	// Name is the slave's name, which the instance attaches as.
	Name string
	// Password is a fresh password for this start only; the instance must
	// present it when it attaches (pass it as user data, on a kernel
	// command line, in an environment; never in a command line others see).
	Password string
	// MasterID names this master; the driver tags every instance with it
	// (and with Name) so that a Reaper can find instances left behind.
	MasterID string
}

// Instance identifies one started instance.
type Instance struct {
	ID       string // the driver's id: an EC2 instance id, a libvirt domain UUID, a process id
	Slave    string // the slave it was started for
	MasterID string // the master whose tag it carries
	Started  time.Time
}

// Lister is a LatentSlave that can list the instances that carry a
// master's tag, so that instances left behind by a crash can be reaped.
type Lister interface {
	// List returns every instance tagged with masterID, of any slave
	// handled by this driver, that is not yet stopped.
	List(ctx context.Context, masterID string) ([]Instance, error)
}

// Checker is a LatentSlave that can tell whether a starting instance is
// still alive, so that one that died before attaching fails at once with
// the driver's reason instead of waiting out missing_timeout.
type Checker interface {
	// Check returns nil while inst is starting or running, and an error
	// saying why once it has died or vanished.
	Check(ctx context.Context, inst Instance) error
}
