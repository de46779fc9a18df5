package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/buildslave/buildslave/cluster"
)

// A master joins the cluster at start, claims each slave name at attach and
// releases it at detach; a name held by another live master is refused with
// the owner's address, where the slave can be sent.
func Example() {
	ctx := context.Background()
	m, err := cluster.Join(ctx, cluster.Config{
		ID:        "master-a",
		Addrs:     map[string]string{"pb": "10.0.0.1:9989", "msgpack": "10.0.0.1:9990"},
		Endpoints: []string{"127.0.0.1:2379"},
		LeaseTTL:  10 * time.Second, // the default
	})
	if err != nil {
		log.Fatal(err) // etcd unreachable, or "master-a" already live: exit non-zero, nothing started
	}
	defer m.Close()

	var owned *cluster.OwnedError
	switch err := m.Claim(ctx, "bot1"); {
	case errors.As(err, &owned):
		fmt.Println("bot1 is attached to", owned.Owner.Master, "at", owned.Owner.Addrs["pb"])
	case err != nil:
		log.Print(err) // etcd lost: refuse the attach, keep serving what is held
	default:
		defer m.Release(ctx, "bot1", nil)
	}
}

// A latent start is recorded before the driver's Start, so that a dead
// master's instance can be found and stopped by the leader.
func ExampleMember_RecordStart() {
	ctx := context.Background()
	m, err := cluster.Join(ctx, cluster.Config{ID: "master-a", Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	in, err := m.RecordStart(ctx, "latent1", "ec2")
	if err != nil {
		log.Fatal(err) // another master is starting latent1, or this one lost etcd: do not start
	}
	instance := "i-0123456789" // what the driver's Start returned
	if err := in.SetInstance(ctx, instance); err != nil {
		log.Print(err) // the record is gone: stop the instance rather than use it
	}
	// ... builds ... the driver's Stop ...
	if err := in.Clear(ctx); err != nil {
		log.Print(err)
	}
}
