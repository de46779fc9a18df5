package cluster_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
)

// stopLog records the leader's stops, by slave, and can fail the first stop
// of a slave once.
type stopLog struct {
	mu      sync.Mutex
	stopped map[string][]cluster.IntentInfo // by slave, each successful stop
	by      map[string]string               // slave → master that stopped it
	failing map[string]bool                 // slaves whose next stop fails
}

func newStopLog() *stopLog {
	return &stopLog{stopped: map[string][]cluster.IntentInfo{}, by: map[string]string{}, failing: map[string]bool{}}
}

func (s *stopLog) stopper(leader string) cluster.Stopper {
	return cluster.StopperFunc(func(_ context.Context, in cluster.IntentInfo) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.failing[in.Slave] {
			s.failing[in.Slave] = false
			return errors.New("cloud says no, this once")
		}
		s.stopped[in.Slave] = append(s.stopped[in.Slave], in)
		s.by[in.Slave] = leader
		return nil
	})
}

func (s *stopLog) count(slave string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.stopped[slave])
}

// lead runs m.Lead until the test ends (or m dies); the function it returns
// waits for Lead to return (30 s at most: a member that lost etcd notices
// it only when its client gives the lease up, ~9 s with a TTL of 2 s) and
// returns its error.
func lead(t *testing.T, m *cluster.Member, cfg cluster.LeaderConfig) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { err = m.Lead(ctx, cfg); close(done) }()
	wait := func() error {
		select {
		case <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Lead of " + m.ID() + " did not return within 30 s")
		}
	}
	t.Cleanup(func() {
		cancel()
		if err := wait(); err != nil && !errors.Is(err, cluster.ErrSessionLost) {
			t.Error(err)
		}
	})
	return wait
}

// eventually polls cond every 20 ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leaderIs(t *testing.T, m *cluster.Member, want string) func() bool {
	return func() bool {
		id, ok, err := m.Leader(t.Context())
		return err == nil && ok && id == want
	}
}

func TestLeaderStopsDeadMastersInstancesOnceAndLeadershipMoves(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	aCli := rawClient(t, srv) // closing it is a dies: its lease expires
	ttl2 := func(cli *clientv3.Client) func(*cluster.Config) {
		return func(c *cluster.Config) { c.LeaseTTL = 2 * time.Second; c.Client = cli }
	}
	log := newStopLog()
	retry := 200 * time.Millisecond

	// a leads; b and c wait their turn.
	a := join(t, srv, "a", ttl2(aCli))
	if id, ok, err := a.Leader(ctx); err != nil || ok {
		t.Fatalf("Leader before anyone leads = %q, %v, %v; want none", id, ok, err)
	}
	aDone := lead(t, a, cluster.LeaderConfig{Stopper: log.stopper("a"), RetryInterval: retry})
	eventually(t, 5*time.Second, "a leads", leaderIs(t, a, "a"))
	b := join(t, srv, "b", ttl2(rawClient(t, srv)))
	c := join(t, srv, "c", ttl2(rawClient(t, srv)))
	var whileB sync.WaitGroup
	whileB.Add(1)
	lead(t, b, cluster.LeaderConfig{Stopper: log.stopper("b"), RetryInterval: retry,
		WhileLeading: func(ctx context.Context) { whileB.Done(); <-ctx.Done() }})
	cDone := lead(t, c, cluster.LeaderConfig{Stopper: log.stopper("c"), RetryInterval: retry})
	if id, _, _ := c.Leader(ctx); id != "a" {
		t.Fatalf("c sees leader %q, want a (first elected)", id)
	}

	// c, not the leader, dies holding a started instance: a stops it.
	inC, err := c.RecordStart(ctx, "latent-c", "local")
	if err != nil {
		t.Fatal(err)
	}
	if err := inC.SetInstance(ctx, "4242"); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	log.failing["latent-c"] = true // the first stop fails: retried after RetryInterval
	log.mu.Unlock()
	if _, err := b.RecordStart(ctx, "latent-b", "local"); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	c.Close() // revoked: the lease ends now, as for a master that shut down
	eventually(t, 10*time.Second, "latent-c stopped", func() bool { return log.count("latent-c") == 1 })
	t.Logf("c's instance stopped %v after c left (one failed stop, retried after %v)", time.Since(died).Round(10*time.Millisecond), retry)
	if got := log.stopped["latent-c"][0]; got.Instance != "4242" || got.Driver != "local" || got.Master != "c" || log.by["latent-c"] != "a" {
		t.Fatalf("stopped %+v by %s; want c's local instance 4242, by a", got, log.by["latent-c"])
	}
	if err := cDone(); !errors.Is(err, cluster.ErrSessionLost) {
		t.Errorf("c's Lead returned %v after c closed, want ErrSessionLost", err)
	}

	// a, the leader, dies (its client closes: its lease expires, it is not
	// revoked) with two starts: one whose driver named the instance, one
	// whose driver had not yet. b takes over and stops both, once.
	in1, err := a.RecordStart(ctx, "latent-a1", "ec2")
	if err != nil {
		t.Fatal(err)
	}
	if err := in1.SetInstance(ctx, "i-a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RecordStart(ctx, "latent-a2", "ec2"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	aCli.Close()
	eventually(t, 15*time.Second, "b leads", leaderIs(t, b, "b"))
	whileB.Wait()
	eventually(t, 10*time.Second, "a's instances stopped", func() bool {
		return log.count("latent-a1") == 1 && log.count("latent-a2") == 1
	})
	t.Logf("b leads and stopped a's instances %v after a died (TTL 2 s)", time.Since(killed).Round(10*time.Millisecond))
	if err := aDone(); !errors.Is(err, cluster.ErrSessionLost) {
		t.Errorf("a's Lead returned %v after a died, want ErrSessionLost", err)
	}
	eventually(t, 5*time.Second, "records cleared", func() bool {
		got, err := b.Intents(ctx)
		return err == nil && len(got) == 1 && got[0].Slave == "latent-b"
	})
	for _, s := range []string{"latent-c", "latent-a1", "latent-a2"} {
		if n := log.count(s); n != 1 {
			t.Errorf("%s stopped %d times, want once", s, n)
		}
	}
	if n := log.count("latent-b"); n != 0 {
		t.Errorf("live master b's instance stopped %d times", n)
	}
	if log.stopped["latent-a2"][0].Instance != "" || log.by["latent-a1"] != "b" {
		t.Errorf("a2 stopped as %+v by %s, want no instance id, by b", log.stopped["latent-a2"][0], log.by["latent-a1"])
	}
}

func TestLeadNeedsAStopper(t *testing.T) {
	srv := clustertest.Start(t)
	a := join(t, srv, "a", nil)
	if err := a.Lead(t.Context(), cluster.LeaderConfig{}); err == nil || !strings.Contains(err.Error(), "Stopper") {
		t.Fatalf("Lead without a Stopper = %v, want an error naming Stopper", err)
	}
}

// etcd lost while leading: the leader's session ends (when its client
// gives the lease up), and Lead returns ErrSessionLost instead of leading
// on without it. Until then its writes as leader are guarded by its
// election key, which a new leader's election would have deleted.
func TestLeadEndsWhenEtcdIsLost(t *testing.T) {
	srv := clustertest.Start(t)
	a := join(t, srv, "a", func(c *cluster.Config) { c.LeaseTTL = 2 * time.Second })
	done := lead(t, a, cluster.LeaderConfig{Stopper: newStopLog().stopper("a")})
	eventually(t, 5*time.Second, "a leads", leaderIs(t, a, "a"))
	lost := time.Now()
	srv.Stop()
	if err := done(); !errors.Is(err, cluster.ErrSessionLost) {
		t.Fatalf("Lead after etcd stopped = %v, want ErrSessionLost", err)
	}
	t.Logf("Lead returned %v after etcd stopped (TTL 2 s)", time.Since(lost).Round(100*time.Millisecond))
}
