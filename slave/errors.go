package slave

import "errors"

// Errors the manager returns, to be tested with errors.Is.
var (
	// ErrUnknownSlave: no slave of that name is configured.
	ErrUnknownSlave = errors.New("unknown slave name")
	// ErrBadPassword: the password does not match the slave's.
	ErrBadPassword = errors.New("wrong password")
	// ErrTooManyRefusals: the remote address has had too many logins
	// refused lately, so this one was refused without a check (see
	// Config.RefusalBurst).
	ErrTooManyRefusals = errors.New("too many refused logins from this address; refused unchecked, try again later")
	// ErrAttaching: another connection under that name has logged in and
	// is still attaching (see Manager.Login).
	ErrAttaching = errors.New("another connection under this name is still attaching")
	// ErrDuplicate: a connection under that name is attached and alive.
	ErrDuplicate = errors.New("slave is already attached and answered a ping")
	// ErrSlaveLost is the cause of a build's context when its slave's
	// connection is lost.
	ErrSlaveLost = errors.New("slave lost")
	// ErrNoSlot: TryAcquire found no slave with a free build slot.
	ErrNoSlot = errors.New("no free build slot")
	// ErrNotAttached: the operation needs an attached slave.
	ErrNotAttached = errors.New("slave is not attached")
	// ErrClosed: the manager is shutting down or closed.
	ErrClosed = errors.New("slave manager closed")
)

// errRemoved is why a slave removed by Reconfigure is disconnected.
var errRemoved = errors.New("slave removed from the configuration")
