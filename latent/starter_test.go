package latent_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
)

// starter is a latent.Starter in memory: a log of its calls, and errors
// to fail them with.
type starter struct {
	mu       sync.Mutex
	calls    []string
	instErr  error // SetInstance fails with it
	clearErr error // Clear fails with it, once
}

func (s *starter) log(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
}

func (s *starter) RecordStart(_ context.Context, slave, driver string) (latent.StartRecord, error) {
	s.log("record " + slave + " " + driver)
	return s, nil
}

func (s *starter) SetInstance(context.Context, string) error {
	s.log("instance")
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.instErr
}

func (s *starter) Clear(context.Context) error {
	s.log("clear")
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.clearErr
	s.clearErr = nil
	return err
}

func (s *starter) history() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func TestStarterRecordsBeforeStartAndClearsAfterStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &starter{clearErr: errors.New("etcd unreachable")}
		f := newFixture(t, latent.Config{Starter: st}, nil, spec{s: mustSlave(t, "lat"), wait: 0, boot: latenttest.Boot{Delay: time.Second}})
		for range 2 {
			b := f.acquire(t.Context(), "lat")
			<-b.done
			if b.err != nil {
				t.Fatal(b.err)
			}
			b.b.Release()
			f.wantState(t, "lat", latent.Stopped)
		}
		want := []string{"record lat latenttest", "instance", "clear", "clear", "record lat latenttest", "instance", "clear"}
		if got := st.history(); !slices.Equal(got, want) {
			t.Errorf("starter calls = %q, want %q (a failed clear retried before the next record)", got, want)
		}
		if n := len(f.log.Matching("start record not cleared")); n != 1 {
			t.Errorf("%d lines about the uncleared record, want 1:\n%s", n, f.log)
		}
	})
}

func TestStarterUnrecordedInstanceIsStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &starter{instErr: errors.New("intent gone")}
		f := newFixture(t, latent.Config{Starter: st}, nil, spec{s: mustSlave(t, "lat"), wait: time.Hour, boot: latenttest.Boot{Delay: time.Second}})
		b := f.acquire(t.Context(), "lat")
		<-b.done
		if b.err == nil || !errors.Is(b.err, st.instErr) {
			t.Fatalf("Acquire = %v, want the SetInstance error", b.err)
		}
		synctest.Wait()
		f.cloud.AssertNoneRunning(t)
		if got := f.ops("stop"); len(got) != 1 {
			t.Errorf("stops = %v, want 1", got)
		}
	})
}
