package cluster

import (
	"context"

	"github.com/buildslave/buildslave/latent"
)

// Latent is this master as the latent lifecycle's Starter
// (latent.Config.Starter): every start is an intent record (RecordStart)
// written before the driver's Start, so that a latent slave starts on one
// master at most, cluster-wide (another master's start is refused with an
// *IntentExistsError naming it), and the leader can stop a dead master's
// instance.
func (m *Member) Latent() latent.Starter { return latentStarter{m} }

type latentStarter struct{ m *Member }

func (s latentStarter) RecordStart(ctx context.Context, slave, driver string) (latent.StartRecord, error) {
	in, err := s.m.RecordStart(ctx, slave, driver)
	if err != nil {
		return nil, err
	}
	return in, nil
}
