package cluster_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
)

func TestBuildRequestsClaimedOnceByAFittingMaster(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	a := join(t, srv, "a", nil)
	b := join(t, srv, "b", nil)
	for m, name := range map[*cluster.Member]string{a: "bot-a", b: "bot-b"} {
		if err := m.Claim(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	changed := b.WatchRequests(ctx)

	// Two masters, each holding a fitting slave, race for every request.
	const n = 40
	for i := range n {
		if _, err := a.Enqueue(ctx, "hello", []string{"bot-a", "bot-b"}, "race "+string(rune('A'+i%26))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchRequests did not signal the queued requests")
	}
	reqs, err := b.Requests(ctx)
	if err != nil || len(reqs) != n {
		t.Fatalf("Requests = %d, %v; want %d", len(reqs), err, n)
	}
	if r := reqs[0]; r.State != cluster.RequestQueued || r.Submitter != "a" || r.Builder != "hello" || r.Reason != "race A" {
		t.Fatalf("first request = %+v, want a's queued build of hello, in queue order", r)
	}
	wins := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for m, slave := range map[*cluster.Member]string{a: "bot-a", b: "bot-b"} {
		wg.Go(func() {
			for _, r := range reqs {
				c, err := m.ClaimRequest(ctx, r.ID, slave)
				switch {
				case errors.Is(err, cluster.ErrRequestTaken):
				case err != nil:
					t.Errorf("%s claiming %s: %v", m.ID(), r.ID, err)
				default:
					mu.Lock()
					wins[r.ID]++
					mu.Unlock()
					if got := c.Request(); got.State != cluster.RequestClaimed || got.Master != m.ID() || got.Slave != slave {
						t.Errorf("claim = %+v, want claimed by %s on %s", got, m.ID(), slave)
					}
				}
			}
		})
	}
	wg.Wait()
	if len(wins) != n {
		t.Fatalf("%d requests claimed, want all %d", len(wins), n)
	}
	for id, w := range wins {
		if w != 1 {
			t.Errorf("request %s claimed %d times", id, w)
		}
	}
	reqs, err = a.Requests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byMaster := map[string]int{}
	for _, r := range reqs {
		byMaster[r.Master]++
	}
	t.Logf("claims: %v", byMaster)
	if byMaster["a"]+byMaster["b"] != n {
		t.Fatalf("claims by master = %v, want %d in all", byMaster, n)
	}
}

func TestBuildRequestClaimRules(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	a := join(t, srv, "a", nil)
	b := join(t, srv, "b", nil)
	if err := b.Claim(ctx, "bot1"); err != nil {
		t.Fatal(err)
	}
	r, err := a.Enqueue(ctx, "hello", []string{"bot1", "latent1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ClaimRequest(ctx, r.ID, "bot1"); !errors.Is(err, cluster.ErrNotOwner) {
		t.Fatalf("a claims for b's slave: %v, want ErrNotOwner", err)
	}
	if _, err := a.ClaimRequestToStart(ctx, r.ID, "bot1"); !errors.Is(err, cluster.ErrNotOwner) {
		t.Fatalf("a claims to start b's attached slave: %v, want ErrNotOwner", err)
	}
	if _, err := b.RecordStart(ctx, "latent1", "local"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ClaimRequestToStart(ctx, r.ID, "latent1"); !errors.Is(err, cluster.ErrNotOwner) {
		t.Fatalf("a claims to start a slave b is starting: %v, want ErrNotOwner", err)
	}
	r2, err := a.Enqueue(ctx, "hello", []string{"latent2"}, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.ClaimRequestToStart(ctx, r2.ID, "latent2")
	if err != nil {
		t.Fatalf("a claims to start an idle latent slave: %v", err)
	}
	if err := c.Done(ctx); err != nil {
		t.Fatal(err)
	}
	c, err = b.ClaimRequest(ctx, r.ID, "bot1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Unclaim(ctx); err != nil { // b finds it cannot run it after all
		t.Fatal(err)
	}
	if got, err := a.Requests(ctx); err != nil || len(got) != 1 || got[0].State != cluster.RequestQueued || got[0].Master != "" {
		t.Fatalf("Requests after Unclaim = %+v, %v; want it queued again", got, err)
	}
	if err := c.Done(ctx); !errors.Is(err, cluster.ErrRequestGone) {
		t.Fatalf("Done after Unclaim = %v, want ErrRequestGone", err)
	}
	c, err = b.ClaimRequest(ctx, r.ID, "bot1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ClaimRequest(ctx, r.ID, "bot1"); !errors.Is(err, cluster.ErrRequestTaken) {
		t.Fatalf("second claim: %v, want ErrRequestTaken", err)
	}
	if err := c.Done(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Requests(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Requests after Done = %+v, %v; want none", got, err)
	}
	if _, err := a.Enqueue(ctx, "", []string{"x"}, ""); err == nil || !strings.Contains(err.Error(), "builder") {
		t.Errorf("Enqueue without builder: %v, want an error naming builder", err)
	}
	if _, err := a.Enqueue(ctx, "hello", nil, ""); err == nil || !strings.Contains(err.Error(), "slaves") {
		t.Errorf("Enqueue without slaves: %v, want an error naming slaves", err)
	}
}

// A master that dies while it runs a claimed build: the build is not run
// again (it may have had effects); the leader marks the request lost and
// says why.
func TestBuildRequestLostWithItsMaster(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	b := join(t, srv, "b", nil)
	lead(t, b, cluster.LeaderConfig{Stopper: newStopLog().stopper("b")})
	cli := rawClient(t, srv)
	a := join(t, srv, "a", func(c *cluster.Config) { c.Client = cli; c.LeaseTTL = 2 * time.Second })
	if err := a.Claim(ctx, "bot1"); err != nil {
		t.Fatal(err)
	}
	r, err := b.Enqueue(ctx, "hello", []string{"bot1"}, "forced on b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ClaimRequest(ctx, r.ID, "bot1"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	var got []cluster.BuildRequest
	eventually(t, 15*time.Second, "request marked lost", func() bool {
		got, err = b.Requests(ctx)
		return err == nil && len(got) == 1 && got[0].State == cluster.RequestLost
	})
	if !strings.Contains(got[0].Lost, `master "a"`) || !strings.Contains(got[0].Lost, "not run again") {
		t.Fatalf("lost request says %q; want it to name master a and say it is not run again", got[0].Lost)
	}
	if _, err := b.ClaimRequest(ctx, r.ID, "bot1"); !errors.Is(err, cluster.ErrRequestTaken) {
		t.Fatalf("claiming a lost request: %v, want ErrRequestTaken", err)
	}
}
