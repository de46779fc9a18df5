package latent_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
)

const (
	manySlaves = 1000
	bootDelay  = 2 * time.Second
)

// substantiateMany substantiates manySlaves fake latent slaves at once,
// each booting for bootDelay, and returns how long after the boot delay
// the last one attached, the peak number of goroutines and the heap
// growth. sample is called while they boot.
func substantiateMany(tb testing.TB, sample func()) (beyond time.Duration, heap uint64) {
	var specs []spec
	for i := range manySlaves {
		specs = append(specs, spec{s: mustSlave(tb, fmt.Sprintf("bot%04d", i)), wait: -1, boot: latenttest.Boot{Delay: bootDelay}})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := newFixture(tb, latent.Config{Logger: quiet, ReapInterval: -1}, nil, specs...)
	start := time.Now()
	var wg sync.WaitGroup
	for _, sp := range specs {
		wg.Go(func() {
			b, err := f.m.Acquire(tb.Context(), sp.s.Name())
			if err != nil {
				tb.Error(err)
				return
			}
			b.Release()
		})
	}
	sample()
	wg.Wait()
	beyond = time.Since(start) - bootDelay
	runtime.ReadMemStats(&after)
	if err := f.lc.Shutdown(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	f.cloud.AssertNoneRunning(tb)
	return beyond, after.HeapAlloc - before.HeapAlloc
}

// TestThousandSubstantiations checks, in virtual time, that 1,000
// concurrent substantiations all attach at the boot delay exactly.
func TestThousandSubstantiations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var peak int
		beyond, heap := substantiateMany(t, func() {
			synctest.Wait() // everything is booting
			peak = runtime.NumGoroutine()
		})
		if beyond != 0 {
			t.Errorf("last attach %v after the boot delay, want 0", beyond)
		}
		t.Logf("%d slaves: last attach +%v beyond the %v boot (virtual time); %d goroutines while booting; heap +%.1f MiB",
			manySlaves, beyond, bootDelay, peak, float64(heap)/(1<<20))
	})
}

// BenchmarkThousandSubstantiations substantiates 1,000 fake latent slaves
// with a 2 s boot delay in real time, reporting the time from the boot
// delay to the last attach, the peak goroutines and the heap growth.
func BenchmarkThousandSubstantiations(b *testing.B) {
	for b.Loop() {
		var peak atomic.Int64
		stop := make(chan struct{})
		var sampler sync.WaitGroup
		beyond, heap := substantiateMany(b, func() {
			sampler.Go(func() {
				for {
					peak.Store(max(peak.Load(), int64(runtime.NumGoroutine())))
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
			})
		})
		close(stop)
		sampler.Wait()
		b.ReportMetric(float64(beyond.Microseconds())/1000, "ms-beyond-boot")
		b.ReportMetric(float64(peak.Load()), "peak-goroutines")
		b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
	}
}
