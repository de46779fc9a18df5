package cluster_test

import (
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
)

// skew rewrites the record at key as if the master that wrote it had a
// clock at the time at, keeping the record under its lease.
func skew(t *testing.T, cli *clientv3.Client, key, field string, at time.Time) {
	t.Helper()
	resp, err := cli.Get(t.Context(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading %s: %v, %d records", key, err, len(resp.Kvs))
	}
	var rec struct {
		Format int                        `json:"format"`
		Body   map[string]json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	rec.Body[field], _ = json.Marshal(at)
	v, _ := json.Marshal(rec)
	if _, err := cli.Put(t.Context(), key, string(v), clientv3.WithIgnoreLease()); err != nil {
		t.Fatal(err)
	}
}

// TestClockSkewLeasesDecide: a master whose clock is a century ahead (its
// member record joined in 2126) or decades behind (its latent start recorded
// in 1970) is live while its lease is, for membership, ownership and the
// leader's sweep; and dead only when its lease ends.
func TestClockSkewLeasesDecide(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	raw := rawClient(t, srv)
	b := join(t, srv, "b", nil)
	events, err := b.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next(t, events, 5*time.Second) // b itself
	cli := rawClient(t, srv)
	a := join(t, srv, "a", func(c *cluster.Config) { c.Client = cli; c.LeaseTTL = 2 * time.Second })
	next(t, events, 5*time.Second) // a
	if err := a.Claim(ctx, "bot1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RecordStart(ctx, "latent1", "ec2"); err != nil {
		t.Fatal(err)
	}
	skew(t, raw, "/test/members/a", "started", time.Now().AddDate(100, 0, 0))
	skew(t, raw, "/test/intents/latent1", "recorded", time.Unix(0, 0))

	stops := newStopLog()
	lead(t, b, cluster.LeaderConfig{Stopper: stops.stopper("b")})
	eventually(t, 10*time.Second, "b leads", func() bool { l, _, _ := b.Leader(ctx); return l == "b" })
	// Three lease TTLs of a skewed but live a: nothing of it is taken.
	for range 3 {
		select {
		case ev := <-events:
			t.Fatalf("member event %+v while a's lease lives", ev)
		case <-time.After(2 * time.Second):
		}
		if ms, err := b.Members(ctx); err != nil || ids(ms) != "a,b" {
			t.Fatalf("Members = %q, %v; want a,b", ids(ms), err)
		}
		if o, ok, err := b.Owner(ctx, "bot1"); err != nil || !ok || o.Master != "a" {
			t.Fatalf("bot1's owner = %+v, %v, %v; want a", o, ok, err)
		}
		if n := stops.count("latent1"); n != 0 {
			t.Fatalf("the leader stopped live a's instance (recorded in 1970) %d times", n)
		}
	}

	died := time.Now()
	cli.Close() // a dies: its lease ends TTL later, whatever its records say
	if ev := next(t, events, 15*time.Second); ev.Type != cluster.Left || ev.Member.ID != "a" {
		t.Fatalf("event = %+v, want a left", ev)
	}
	t.Logf("a left %v after it died (TTL 2 s)", time.Since(died).Round(100*time.Millisecond))
	if _, ok, err := b.Owner(ctx, "bot1"); err != nil || ok {
		t.Fatalf("bot1 still owned after a's lease ended (%v)", err)
	}
	eventually(t, 10*time.Second, "the leader stops a's instance", func() bool { return stops.count("latent1") == 1 })
}

// TestClockSkewMissingDueByLease: a dead master's missing notice is due
// when etcd ends the lease its Release granted for missing_timeout, not at
// the Due its clock wrote: a Due a century ahead does not hold it back.
func TestClockSkewMissingDueByLease(t *testing.T) {
	a, b := leaveA(t)
	a.cli.Close() // a dies before its missing_timeout ran out
	skew(t, b.cli, "/test/missing/bot", "due", time.Now().AddDate(100, 0, 0))
	eventually(t, 15*time.Second, "b sends the notice a owed", func() bool { return notices("bot", b) == 1 })
}
