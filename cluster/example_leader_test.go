package cluster_test

import (
	"context"
	"errors"
	"log"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/latent"
)

// Every master runs for leader; the one elected stops the latent instances
// of masters that died, through the application's drivers.
func ExampleMember_Lead() {
	ctx := context.Background()
	m, err := cluster.Join(ctx, cluster.Config{ID: "master-a", Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	drivers := map[string]latent.LatentSlave{} // the application's latent slaves, by name
	stopper := cluster.StopperFunc(func(ctx context.Context, in cluster.IntentInfo) error {
		d, ok := drivers[in.Slave]
		if !ok {
			return errors.New("not configured here: " + in.Slave)
		}
		return d.Stop(ctx, latent.Instance{ID: in.Instance, Slave: in.Slave, MasterID: in.Master})
	})
	go func() {
		if err := m.Lead(ctx, cluster.LeaderConfig{Stopper: stopper}); err != nil {
			log.Print(err) // this master's session ended
		}
	}()
}

// A build forced on any master is queued in etcd; the master that holds a
// fitting slave claims it, and only one does.
func ExampleMember_ClaimRequest() {
	ctx := context.Background()
	m, err := cluster.Join(ctx, cluster.Config{ID: "master-a", Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Enqueue(ctx, "hello", []string{"bot1", "bot2"}, "forced from the web"); err != nil {
		log.Print(err)
	}

	// On every master, when the queue changes:
	reqs, _ := m.Requests(ctx)
	for _, r := range reqs {
		if r.State != cluster.RequestQueued {
			continue
		}
		claim, err := m.ClaimRequest(ctx, r.ID, "bot1") // a slave this master holds
		if err != nil {
			continue // ErrRequestTaken: another master won; ErrNotOwner: bot1 is not ours
		}
		// ... run the build on bot1 ...
		if err := claim.Done(ctx); err != nil {
			log.Print(err) // ErrRequestGone: our lease ended meanwhile, the build was marked lost
		}
	}
}
