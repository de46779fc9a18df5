// Package latent starts build slaves' machines on demand and stops them
// after use: the LatentSlave interface that drivers such as ec2 and
// libvirt implement, and the Lifecycle that drives them through the slave
// manager without ever leaking an instance. Several masters sharing one
// fleet give the Lifecycle a Starter (Config.Starter), which records every
// start before the driver's Start so that a latent slave starts on one
// master at most.
package latent

import (
	"context"
	"time"

	"github.com/buildslave/buildslave/slave"
)

// Defaults of a latent slave's timeouts, from the EC2LatentBuildSlave
// section of Buildbot 0.8.6's manual. The Lifecycle applies them to every
// driver, a user's own included.
const (
	// DefaultMissingTimeout is how long a started instance may take to
	// attach (missing_timeout), where a normal slave's default is an hour:
	// the Lifecycle uses it for a slave whose Slave was built without
	// slave.MissingTimeout.
	DefaultMissingTimeout = 20 * time.Minute
	// DefaultBuildWaitTimeout is how long an idle instance is kept after
	// its last build (build_wait_timeout), for a driver that is not a
	// BuildWaiter.
	DefaultBuildWaitTimeout = 10 * time.Minute
)

// LatentSlave is a slave whose machine (an instance) the master starts
// when a build wants it and stops after use. Its Slave carries the name,
// the password and every option of a normal slave; its missing_timeout
// bounds an instance's wait for the attach (DefaultMissingTimeout unless
// set).
//
// Start and Stop are called by the Lifecycle only, never concurrently for
// one LatentSlave, and at most one instance of a LatentSlave is running at
// any time.
type LatentSlave interface {
	// Slave is the slave's configuration.
	Slave() *slave.Slave
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

// BuildWaiter is a LatentSlave with a build_wait_timeout of its own; the
// Lifecycle keeps an idle instance of a driver that is not one for
// DefaultBuildWaitTimeout.
type BuildWaiter interface {
	// BuildWaitTimeout is how long an idle instance is kept after its last
	// build: 0 stops it right after each build, a negative value keeps it
	// until the Lifecycle shuts down.
	BuildWaitTimeout() time.Duration
}

// PasswordPasser is a LatentSlave that may hand its instances
// StartRequest.Password. While an instance of one that does is starting,
// only that password admits an attach under the slave's name: the
// configured one, which an impostor may know, does not. An instance of
// any other driver attaches with the configured password.
type PasswordPasser interface {
	// PassesPassword reports whether the instances Start starts from now
	// on present StartRequest.Password when they attach.
	PassesPassword() bool
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

// Starter records every start of a latent slave before the driver's
// Start, for several masters sharing one fleet: a latent slave starts on
// one master at most, cluster-wide, and a master that dies leaves a record
// from which another stops its instance. (*cluster.Member).Latent is one,
// on etcd.
type Starter interface {
	// RecordStart records that this master is about to start an instance
	// of the latent slave with the named driver. An error refuses the
	// start: another master is starting or running the slave (the error
	// names it), or the record cannot be written.
	RecordStart(ctx context.Context, slave, driver string) (StartRecord, error)
}

// StartRecord is one start a Starter recorded.
type StartRecord interface {
	// SetInstance adds the instance's id, once the driver's Start named
	// it. An error means the record is gone or cannot be written: the
	// Lifecycle then stops the instance rather than use it.
	SetInstance(ctx context.Context, id string) error
	// Clear removes the record once the instance is stopped.
	Clear(ctx context.Context) error
}
