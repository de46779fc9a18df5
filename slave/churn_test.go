package slave_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// TestChurn runs attaches, duplicates (live and dead), drops, Reconfigure,
// Acquire/Release, Pause, GracefulShutdown and state reads on a few slaves
// at once, so that `go test -race` sees every path that reads a slave's
// configuration while Reconfigure replaces it. Each worker stops after
// churnRounds rounds or at the deadline, whichever comes first; the test
// then checks that Close leaves no build running and no slave attached.
func TestChurn(t *testing.T) {
	const churnRounds = 20000
	churnFor := 3 * time.Second
	if testing.Short() {
		churnFor = 300 * time.Millisecond
	}
	names := []string{"a", "b", "c", "d"}
	configs := func(r *rand.Rand) []*slave.Slave {
		var out []*slave.Slave
		for i, n := range names {
			if i > 0 && r.IntN(4) == 0 { // "a" stays; the others come and go
				continue
			}
			interval := slave.Disabled
			if r.IntN(2) == 0 {
				interval = time.Duration(1+r.IntN(3)) * time.Millisecond
			}
			out = append(out, mustNew(t, n, "pw",
				slave.MaxBuilds(r.IntN(3)),
				slave.KeepaliveInterval(interval),
				slave.MissingTimeout(time.Duration(1+r.IntN(5))*time.Millisecond),
				slave.Properties(map[string]any{"round": r.Int()})))
		}
		return out
	}
	f := newFixture(t, slave.Config{DuplicatePingTimeout: time.Millisecond, KeepaliveTimeout: time.Millisecond},
		configs(rand.New(rand.NewPCG(0, 0)))...)
	m := f.m
	events, cancelEvents := m.Subscribe()
	defer cancelEvents()
	seen := make(map[slave.EventKind]int)
	counted := make(chan struct{})
	go func() { // ends when Close closes events
		defer close(counted)
		for ev := range events {
			seen[ev.Kind]++
		}
	}()

	deadline := time.Now().Add(churnFor)
	var wg sync.WaitGroup
	worker := func(seed uint64, round func(r *rand.Rand)) {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, seed))
			for i := 0; i < churnRounds && time.Now().Before(deadline); i++ {
				round(r)
			}
		})
	}
	pick := func(r *rand.Rand) string { return names[r.IntN(len(names))] }
	errOK := func(err error, allowed ...error) {
		if err == nil {
			return
		}
		for _, a := range allowed {
			if errors.Is(err, a) {
				return
			}
		}
		t.Errorf("unexpected error: %v", err)
	}

	for w := range 3 { // attachers: new connections, duplicates, silences, drops
		worker(uint64(10+w), func(r *rand.Rand) {
			name := pick(r)
			c := slavetest.NewConn(slave.Info{Admin: fmt.Sprint("admin ", w)})
			if err := m.Authenticate(name, "pw", c.RemoteAddr()); err != nil {
				errOK(err, slave.ErrUnknownSlave, slave.ErrTooManyRefusals) // removed names, all from 127.0.0.1
				return
			}
			if err := m.Attach(context.Background(), name, c); err != nil {
				errOK(err, slave.ErrUnknownSlave, slave.ErrDuplicate, slave.ErrClosed)
				c.Close()
				return
			}
			switch r.IntN(4) {
			case 0:
				c.Drop(nil)
			case 1:
				c.Silent(true) // the next duplicate replaces it; a keepalive may drop it
			}
		})
	}
	for w := range 3 { // builds
		worker(uint64(20+w), func(r *rand.Rand) {
			var b *slave.Build
			var err error
			if r.IntN(2) == 0 {
				b, err = m.TryAcquire(pick(r), pick(r))
				errOK(err, slave.ErrUnknownSlave, slave.ErrNoSlot)
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				b, err = m.Acquire(ctx, pick(r))
				cancel()
				errOK(err, slave.ErrUnknownSlave, context.DeadlineExceeded, slave.ErrSlaveLost)
			}
			if b == nil {
				return
			}
			if b.Slave() == "" || b.Properties()["slavename"] != b.Slave() || b.Conn() == nil {
				t.Errorf("build on %q: properties %v", b.Slave(), b.Properties())
			}
			b.Release()
		})
	}
	for w := range 2 { // reconfigurations, two at once
		worker(uint64(30+w), func(r *rand.Rand) {
			errOK(m.Reconfigure(configs(r)...))
		})
	}
	worker(40, func(r *rand.Rand) { // operators and status readers
		name := pick(r)
		switch r.IntN(4) {
		case 0:
			errOK(m.GracefulShutdown(name), slave.ErrUnknownSlave, slave.ErrNotAttached)
		case 1:
			errOK(m.Pause(name), slave.ErrUnknownSlave)
		case 2:
			errOK(m.Unpause(name), slave.ErrUnknownSlave)
		default:
			for _, st := range m.States() {
				if st.Properties["slavename"] != st.Name {
					t.Errorf("state of %q: properties %v", st.Name, st.Properties)
				}
			}
			m.Slaves()
		}
	})
	wg.Wait()

	m.Close()
	for _, st := range m.States() {
		if st.Attached || st.Running != 0 {
			t.Errorf("after Close: %+v", st)
		}
	}
	<-counted
	t.Logf("events: %v", seen)
	for _, k := range []slave.EventKind{slave.Attached, slave.Detached, slave.Refused, slave.BuildStarted, slave.ShutdownRequested, slave.Paused} {
		if seen[k] == 0 {
			t.Errorf("the churn never produced a %v event", k)
		}
	}
}
