package latent_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// TestRandomSchedules runs 200 seeded random schedules of builds, boot
// failures, deaths, attach timeouts, crashes, failed stops, duplicate
// attaches, latent slaves removed and added back, and a shutdown. The fake
// cloud fails the test on two instances of one slave, a stop during a
// build, or concurrent driver calls; after Shutdown no instance may be
// left, and the manager knows exactly the latent slaves the Lifecycle
// knows. Rerun one schedule with
// -run 'TestRandomSchedules/seed=N$'.
func TestRandomSchedules(t *testing.T) {
	for seed := range uint64(200) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runSchedule(t, seed) })
		})
	}
}

func runSchedule(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 4))
	dur := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(r.Int64N(int64(hi-lo)/int64(time.Second)+1))*time.Second
	}
	waits := []time.Duration{-1, 0, 20 * time.Second, 3 * time.Minute}

	var specs []spec
	names := []string{"a", "b", "c"}[:1+r.IntN(3)]
	for _, n := range names {
		// Boots last whole seconds and missing timeouts end on half
		// seconds, so an attach never ties with its deadline.
		missing := dur(time.Minute, 8*time.Minute) + 500*time.Millisecond
		s := mustSlave(t, n, slave.MaxBuilds(1+r.IntN(2)), slave.MissingTimeout(missing))
		specs = append(specs, spec{s: s, wait: waits[r.IntN(len(waits))], boot: latenttest.Boot{Delay: dur(5*time.Second, 3*time.Minute)}})
	}
	cfg := latent.Config{ReapInterval: dur(time.Minute, 10*time.Minute)}
	if r.IntN(2) == 0 {
		cfg.MaxStarting, cfg.MaxRunning = 1, 2
	}
	f := newFixture(t, cfg, nil, specs...)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx := t.Context()
	build := func(name string, patience, length time.Duration) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, patience)
			defer cancel()
			b, err := f.m.Acquire(ctx, name)
			if err != nil {
				return
			}
			time.Sleep(length)
			b.Release()
		})
	}
	duplicate := func(name string) {
		before, _ := f.m.State(name)
		if !before.Attached {
			return
		}
		err := f.m.Authenticate(name, "configured-"+name, "127.0.0.1:9")
		after, _ := f.m.State(name)
		if err == nil && after.Attached && after.RemoteAddr == before.RemoteAddr {
			t.Errorf("seed %d: a second login of attached slave %s was admitted", seed, name)
		}
		if err == nil { // the first had gone: attach the claimant, as a slave would
			c := slavetest.NewConn(slave.Info{})
			if f.m.Attach(ctx, name, c) != nil {
				c.Close()
			}
		}
	}

	// toggle removes a latent slave from the configuration, or adds it
	// back: removed ones must be stopped, then forgotten, never stranded.
	present := make(map[string]bool)
	for _, n := range names {
		present[n] = true
	}
	toggle := func(name string) {
		present[name] = !present[name]
		var latents []latent.LatentSlave
		for _, n := range names {
			if present[n] {
				latents = append(latents, f.fakes[n])
			}
		}
		err := f.lc.Reconfigure(latents...)
		if err != nil {
			present[name] = !present[name] // nothing changed
		}
		if err != nil && !errors.Is(err, latent.ErrClosed) {
			t.Errorf("seed %d: Reconfigure: %v", seed, err)
		}
	}

	shutdownAt := dur(0, 30*time.Minute) + 250*time.Millisecond
	shutdown := make(chan error, 1)
	wg.Go(func() {
		time.Sleep(shutdownAt)
		sctx, cancel := context.WithTimeout(ctx, 24*time.Hour)
		defer cancel()
		shutdown <- f.lc.Shutdown(sctx)
	})

	for range 10 + r.IntN(30) {
		time.Sleep(dur(0, 2*time.Minute))
		name := names[r.IntN(len(names))]
		fk := f.fakes[name]
		switch r.IntN(11) {
		case 0:
			fk.Next(latenttest.Boot{StartErr: errors.New("no capacity")})
		case 1:
			fk.Next(latenttest.Boot{Delay: dur(time.Second, time.Minute), Die: errors.New("kernel panic")})
		case 2:
			fk.Next(latenttest.Boot{Hang: true})
		case 3:
			fk.Crash(errors.New("host lost"))
		case 4:
			fk.FailStops(errors.New("throttled"))
		case 5:
			duplicate(name)
		case 6:
			toggle(name)
		default:
			build(name, dur(time.Second, 20*time.Minute), dur(0, 5*time.Minute))
		}
	}
	if err := <-shutdown; err != nil {
		t.Errorf("seed %d: Shutdown: %v", seed, err)
	}
	f.cloud.AssertNoneRunning(t)
	for _, n := range names {
		_, inLC := f.lc.Status(n)
		_, inM := f.m.State(n)
		if inLC != inM || inLC != present[n] {
			t.Errorf("seed %d: slave %s configured %v, known to the Lifecycle %v, to the manager %v", seed, n, present[n], inLC, inM)
		}
	}
	for _, st := range f.lc.Statuses() {
		if st.Instance.ID != "" || st.State == latent.Substantiating || st.State == latent.Running || st.State == latent.Idle {
			t.Errorf("seed %d: after Shutdown %+v", seed, st)
		}
	}
	if t.Failed() {
		t.Logf("log of seed %d:\n%s", seed, f.log)
	}
}
