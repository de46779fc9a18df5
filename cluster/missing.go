package cluster

import (
	"time"

	"github.com/buildslave/buildslave/notify"
)

// MissingInfo is the missing notice a detached slave is owed if it attaches
// to no master before Due. Release records it with the name, under no lease,
// so that it outlives the master that recorded it; a Claim anywhere deletes
// it.
type MissingInfo struct {
	// Notice is the notice to send; its Detected is set when it is sent.
	Notice notify.Missing `json:"notice"`
	// Due is when the slave's missing_timeout ends, by the recording
	// master's clock.
	Due time.Time `json:"due"`
	// Master is the id of the master the slave detached from.
	Master string `json:"master"`
}

func (m *Member) missingKey(name string) string { return m.cfg.Prefix + "missing/" + name }
