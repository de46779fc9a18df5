package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// spread calls do(mi, i) for every i < n on the masters mi = i % masters,
// workers goroutines per master, and fails on any error.
func spread(b *testing.B, masters, n, workers int, do func(mi, i int) error) {
	var wg sync.WaitGroup
	for mi := range masters {
		for w := range workers {
			wg.Go(func() {
				for i := mi + w*masters; i < n; i += workers * masters {
					if err := do(mi, i); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
}

// claimAll has the members claim names[i] on members[i%len], with workers
// goroutines per member.
func claimAll(b *testing.B, members []*cluster.Member, names []string, workers int) {
	spread(b, len(members), len(names), workers, func(mi, i int) error {
		return members[mi].Claim(context.Background(), names[i])
	})
}

// BenchmarkAttach10000Over3Masters: three masters claim 10,000 slave
// names between them, 64 at a time each, as their managers do at attach.
// Reports the time for all, and etcd writes per attach (from etcd's
// revision).
func BenchmarkAttach10000Over3Masters(b *testing.B) {
	srv := clustertest.Start(b)
	const n = 10000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bot%05d", i)
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		var ms []*cluster.Member
		for _, id := range []string{"a", "b", "c"} {
			ms = append(ms, joinB(b, srv, id, fmt.Sprintf("/bench%d/", i), 10*time.Second, nil))
		}
		rev := srv.Revision()
		b.StartTimer()
		start := time.Now()
		claimAll(b, ms, names, 64)
		took := time.Since(start)
		b.StopTimer()
		b.ReportMetric(took.Seconds(), "s/10000-attaches")
		b.ReportMetric(float64(srv.Revision()-rev)/n, "writes/attach")
		for _, m := range ms {
			m.Close()
		}
		b.StartTimer()
	}
}

// BenchmarkIdleRequests: three masters, each leading or campaigning,
// watching members and build requests, 10,000 slave names held between
// them, and nothing happening: the requests etcd receives per master per
// second (etcd's grpc_server_msg_received_total over 10 s).
func BenchmarkIdleRequests(b *testing.B) {
	srv := clustertest.Start(b)
	const window = 10 * time.Second
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		var ms []*cluster.Member
		ctx, cancel := context.WithCancel(b.Context())
		var wg sync.WaitGroup
		for _, id := range []string{"a", "b", "c"} {
			m := joinB(b, srv, id, fmt.Sprintf("/idle%d/", i), 10*time.Second, nil)
			ms = append(ms, m)
			wg.Go(func() {
				m.Lead(ctx, cluster.LeaderConfig{Stopper: cluster.StopperFunc(func(context.Context, cluster.IntentInfo) error { return nil })})
			})
			m.WatchRequests(ctx)
			if _, err := m.Watch(ctx); err != nil {
				b.Fatal(err)
			}
		}
		names := make([]string, 10000)
		for i := range names {
			names[i] = fmt.Sprintf("bot%05d", i)
		}
		claimAll(b, ms, names, 16)
		time.Sleep(time.Second) // let the claims' and the election's traffic end
		before := srv.Received(b)
		time.Sleep(window)
		after := srv.Received(b)
		b.ReportMetric(float64(after-before)/float64(len(ms))/window.Seconds(), "requests/master/s")
		cancel()
		wg.Wait()
		for _, m := range ms {
			m.Close()
		}
		b.StartTimer()
	}
}

// BenchmarkFailover3000: master a holds 3,000 slave names and dies (its
// client closes: its lease expires, it is not revoked); b and c, told by
// their watch that a left, claim the names (as the slaves' attaches would).
// Reports the time from a's death until all 3,000 are held elsewhere, and
// that time less the lease TTL.
func BenchmarkFailover3000(b *testing.B) {
	srv := clustertest.Start(b)
	const n, ttl = 3000, 5 * time.Second
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bot%05d", i)
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		prefix := fmt.Sprintf("/failover%d/", i)
		acli := rawClient(b, srv)
		a := joinB(b, srv, "a", prefix, ttl, acli)
		others := []*cluster.Member{joinB(b, srv, "b", prefix, ttl, nil), joinB(b, srv, "c", prefix, ttl, nil)}
		claimAll(b, []*cluster.Member{a}, names, 64)
		events, err := others[0].Watch(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		for ev := range events {
			if ev.Member.ID == "c" {
				break // the live members listed
			}
		}
		b.StartTimer()
		died := time.Now()
		acli.Close()
		for ev := range events {
			if ev.Type == cluster.Left && ev.Member.ID == "a" {
				break
			}
		}
		claimAll(b, others, names, 64)
		took := time.Since(died)
		b.StopTimer()
		b.ReportMetric(took.Seconds(), "s/failover")
		b.ReportMetric((took - ttl).Seconds(), "s-beyond-TTL")
		for _, m := range others {
			m.Close()
		}
		b.StartTimer()
	}
}

func joinB(b *testing.B, srv *clustertest.Server, id, prefix string, ttl time.Duration, cli *clientv3.Client) *cluster.Member {
	b.Helper()
	m, err := cluster.Join(b.Context(), cluster.Config{ID: id, Endpoints: srv.Endpoints, Client: cli, Prefix: prefix, LeaseTTL: ttl, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// managers starts one slave.Manager per member, each knowing every name,
// with the member as its Gate, as the masters of a cluster run.
func managers(b *testing.B, members []*cluster.Member, names []string) []*slave.Manager {
	b.Helper()
	var out []*slave.Manager
	for _, mem := range members {
		slaves := make([]*slave.Slave, len(names))
		for i, name := range names {
			s, err := slave.New(name, "pw")
			if err != nil {
				b.Fatal(err)
			}
			slaves[i] = s
		}
		m, err := slave.NewManager(slave.Config{Logger: quiet, Gate: mem, RefusalBurst: -1}, slaves...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		out = append(out, m)
	}
	return out
}

// attachAll attaches names[i] to mgrs[i%len] through the manager's whole
// attach (authentication, the Gate's claim, registration), workers at a
// time per manager.
func attachAll(b *testing.B, mgrs []*slave.Manager, names []string, workers int) {
	spread(b, len(mgrs), len(names), workers, func(mi, i int) error {
		c := slavetest.NewConn(slave.Info{})
		if err := mgrs[mi].Authenticate(names[i], "pw", c.RemoteAddr()); err != nil {
			return err
		}
		return mgrs[mi].Attach(context.Background(), names[i], c)
	})
}

// BenchmarkManagersAttachAndFailover: three masters' slave managers, each
// with the member as its Gate, attach 10,000 slaves between them (64 at a
// time each); then master a dies (its etcd client closes: its lease
// expires) and its 3,333 slaves attach to b and c, which wait for a's lease
// to end (their claims ask a, which never answers). Reports both times.
func BenchmarkManagersAttachAndFailover(b *testing.B) {
	srv := clustertest.Start(b)
	const n, ttl = 10000, 5 * time.Second
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bot%05d", i)
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		prefix := fmt.Sprintf("/managers%d/", i)
		acli := rawClient(b, srv)
		members := []*cluster.Member{joinB(b, srv, "a", prefix, ttl, acli), joinB(b, srv, "b", prefix, ttl, nil), joinB(b, srv, "c", prefix, ttl, nil)}
		mgrs := managers(b, members, names)
		b.StartTimer()
		start := time.Now()
		attachAll(b, mgrs, names, 64)
		b.ReportMetric(time.Since(start).Seconds(), "s/10000-attaches")
		var ofA []string
		for j := 0; j < n; j += 3 {
			ofA = append(ofA, names[j])
		}
		died := time.Now()
		acli.Close()
		attachAll(b, mgrs[1:], ofA, 64)
		took := time.Since(died)
		b.ReportMetric(took.Seconds(), "s/failover-3333")
		b.ReportMetric((took - ttl).Seconds(), "s-beyond-TTL")
	}
}
