package slave_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

const benchSlaves = 10_000

func benchManager(b *testing.B, n int, opts ...slave.Option) (*slave.Manager, []string) {
	b.Helper()
	names := make([]string, n)
	slaves := make([]*slave.Slave, n)
	for i := range n {
		names[i] = fmt.Sprintf("bot-%05d", i)
		slaves[i] = mustNew(b, names[i], "pw", opts...)
	}
	m, err := slave.NewManager(slave.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, slaves...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m, names
}

// BenchmarkAttachStorm attaches 10,000 slaves at once, from 10,000
// goroutines, and detaches them again; one op is the whole storm.
func BenchmarkAttachStorm(b *testing.B) {
	m, names := benchManager(b, benchSlaves)
	conns := make([]*slavetest.Conn, len(names))
	var before, after runtime.MemStats
	for b.Loop() {
		var wg sync.WaitGroup
		for i, name := range names {
			wg.Go(func() {
				conns[i] = slavetest.NewConn(slave.Info{Admin: "bench"})
				if err := m.Authenticate(name, "pw", conns[i].RemoteAddr()); err != nil {
					b.Error(err)
				}
				if err := m.Attach(context.Background(), name, conns[i]); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, c := range conns {
			c.Drop(nil)
		}
		for _, name := range names {
			for st, _ := m.State(name); st.Attached; st, _ = m.State(name) {
				runtime.Gosched()
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.StartTimer()
	}
	b.ReportMetric(float64(benchSlaves)*float64(b.N)/b.Elapsed().Seconds(), "attaches/s")
	b.ReportMetric(float64(int64(before.HeapAlloc)-int64(after.HeapAlloc))/benchSlaves, "heapB/attached-slave")
}

// BenchmarkAcquireRelease takes and frees build slots on random slaves
// among 10,000 attached ones (max_builds=1), from parallel goroutines.
func BenchmarkAcquireRelease(b *testing.B) {
	m, names := benchManager(b, benchSlaves, slave.MaxBuilds(1))
	for _, name := range names {
		if err := m.Attach(context.Background(), name, slavetest.NewConn(slave.Info{})); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 0))
		for pb.Next() {
			build, err := m.Acquire(context.Background(), names[r.IntN(len(names))])
			if err != nil {
				b.Error(err)
				return
			}
			build.Release()
		}
	})
}

// BenchmarkAcquireContended has many more builders than slots: parallel
// goroutines each wait for any of 8 slaves out of 64 attached
// (max_builds=1), among 10,000 configured.
func BenchmarkAcquireContended(b *testing.B) {
	m, names := benchManager(b, benchSlaves, slave.MaxBuilds(1))
	pool := names[:64]
	for _, name := range pool {
		if err := m.Attach(context.Background(), name, slavetest.NewConn(slave.Info{})); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(64) // 128 goroutines on 2 cores for 64 slots
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 0))
		set := make([]string, 8)
		for pb.Next() {
			for i := range set {
				set[i] = pool[r.IntN(len(pool))]
			}
			build, err := m.Acquire(context.Background(), set...)
			if err != nil {
				b.Error(err)
				return
			}
			build.Release()
		}
	})
}
