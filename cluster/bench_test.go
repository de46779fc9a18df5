package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
)

// revision is etcd's current revision: each successful write (a put, a
// delete, a transaction that writes) adds one.
func revision(b *testing.B, cli *clientv3.Client) int64 {
	b.Helper()
	resp, err := cli.Get(b.Context(), "revision-probe")
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// claimAll has the members claim names[i] on members[i%len], with workers
// goroutines per member, and fails on any error.
func claimAll(b *testing.B, members []*cluster.Member, names []string, workers int) {
	var wg sync.WaitGroup
	for mi, m := range members {
		for w := range workers {
			wg.Go(func() {
				for i := mi + w*len(members); i < len(names); i += workers * len(members) {
					if err := m.Claim(context.Background(), names[i]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
}

// BenchmarkAttach10000Over3Masters: three masters claim 10,000 slave
// names between them, 64 at a time each, as their managers do at attach.
// Reports the time for all, and etcd writes per attach (from etcd's
// revision).
func BenchmarkAttach10000Over3Masters(b *testing.B) {
	srv := clustertest.Start(b)
	cli := rawClient(b, srv)
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
		rev := revision(b, cli)
		b.StartTimer()
		start := time.Now()
		claimAll(b, ms, names, 64)
		took := time.Since(start)
		b.StopTimer()
		b.ReportMetric(took.Seconds(), "s/10000-attaches")
		b.ReportMetric(float64(revision(b, cli)-rev)/n, "writes/attach")
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
		before := received(b, srv)
		time.Sleep(window)
		after := received(b, srv)
		b.ReportMetric(float64(after-before)/float64(len(ms))/window.Seconds(), "requests/master/s")
		cancel()
		wg.Wait()
		for _, m := range ms {
			m.Close()
		}
		b.StartTimer()
	}
}

// received sums etcd's grpc_server_msg_received_total: every request and
// every message on a stream (keepalives, watch requests).
func received(b *testing.B, srv *clustertest.Server) int64 {
	b.Helper()
	resp, err := http.Get(srv.Endpoints[0] + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var sum int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_msg_received_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			b.Fatal(err)
		}
		sum += int64(v)
	}
	if sum == 0 {
		b.Fatal("etcd's /metrics has no grpc_server_msg_received_total")
	}
	return sum
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
