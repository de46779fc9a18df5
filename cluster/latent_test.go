package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
)

// recordedFirst is a latent driver whose Start fails unless the cluster
// holds this master's intent record for the slave.
type recordedFirst struct {
	*latenttest.Fake
	member *cluster.Member
}

func (d recordedFirst) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	intents, err := d.member.Intents(ctx)
	if err != nil {
		return latent.Instance{}, err
	}
	for _, in := range intents {
		if in.Slave == req.Name && in.Master == d.member.ID() && in.Driver == "cluster_test" && in.Instance == "" {
			return d.Fake.Start(ctx, req)
		}
	}
	return latent.Instance{}, fmt.Errorf("started without an intent record: %+v", intents)
}

// latentMaster is a master with one latent slave, "lat", started through
// the cluster.
type latentMaster struct {
	member *cluster.Member
	m      *slave.Manager
	lc     *latent.Lifecycle
	cloud  *latenttest.Cloud
}

func newLatentMaster(t *testing.T, srv *clustertest.Server, id string) *latentMaster {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	lm := &latentMaster{member: join(t, srv, id, nil)}
	var err error
	lm.m, err = slave.NewManager(slave.Config{Gate: lm.member, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	lm.cloud = latenttest.NewCloud(t, lm.m)
	s, err := slave.New("lat", "pw")
	if err != nil {
		t.Fatal(err)
	}
	fake := lm.cloud.Slave(s, -1, latenttest.Boot{}) // kept until Shutdown
	lm.lc, err = latent.New(lm.m, latent.Config{MasterID: id, Logger: quiet, ReapInterval: -1, Starter: lm.member.Latent()},
		recordedFirst{Fake: fake, member: lm.member})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := lm.lc.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		lm.m.Close()
		lm.cloud.AssertNoneRunning(t)
	})
	return lm
}

func TestLatentStartRecordedFirstAndOnOneMasterOnly(t *testing.T) {
	srv := clustertest.Start(t)
	a := newLatentMaster(t, srv, "a")
	b := newLatentMaster(t, srv, "b")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// Both masters' builds want lat at once: one starts it, the other's
	// start is refused by its intent record, and its build learns why.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, lm := range []*latentMaster{a, b} {
		wg.Go(func() {
			bld, err := lm.m.Acquire(ctx, "lat")
			if err == nil {
				bld.Release()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	var started, refused *latentMaster
	var exists *cluster.IntentExistsError
	switch {
	case errs[0] == nil && errors.As(errs[1], &exists):
		started, refused = a, b
	case errs[1] == nil && errors.As(errs[0], &exists):
		started, refused = b, a
	default:
		t.Fatalf("Acquire on a, b = %v, %v; want one build and one refused by the other's intent", errs[0], errs[1])
	}
	if exists.Existing.Master != started.member.ID() || !strings.Contains(exists.Error(), fmt.Sprintf("master %q", started.member.ID())) {
		t.Errorf("refusal %q does not name master %s", exists, started.member.ID())
	}
	if n := len(refused.cloud.Ledger()); n != 0 {
		t.Errorf("the refused master called its driver %d times", n)
	}

	running := started.cloud.Running()
	if len(running) != 1 {
		t.Fatalf("running instances = %v, want 1", running)
	}
	soon(t, "the intent names the instance", func() bool { // the attach may beat SetInstance
		intents, err := a.member.Intents(ctx)
		return err == nil && len(intents) == 1 && intents[0].Instance == running[0].ID
	})
	if o, ok, _ := a.member.Owner(ctx, "lat"); !ok || o.Master != started.member.ID() {
		t.Errorf("owner of lat = %+v, want %s", o, started.member.ID())
	}

	if err := started.lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if intents, err := a.member.Intents(ctx); err != nil || len(intents) != 0 {
		t.Fatalf("intents after the instance stopped = %+v, %v; want none", intents, err)
	}
}
