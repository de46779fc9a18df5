package latent_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
)

// A Manager.Reconfigure that leaves out a latent slave does not strand
// it: the manager still knows it, so a build substantiates it and its
// instance is admitted; one that names it is refused.
func TestManagerReconfigureCannotStrandALatentSlave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Delay: time.Minute}})
		if err := f.m.Reconfigure(); err != nil {
			t.Fatal(err)
		}
		if err := f.m.Reconfigure(mustSlave(t, "bot")); err == nil {
			t.Error("Manager.Reconfigure took a latent slave's name")
		}
		b := f.acquire(t.Context(), "bot")
		time.Sleep(time.Minute)
		<-b.done
		if b.err != nil {
			t.Fatalf("Acquire after Manager.Reconfigure = %v\n%s", b.err, f.log)
		}
		b.b.Release()
		time.Sleep(time.Minute)
		f.wantState(t, "bot", latent.Stopped)
		f.cloud.AssertNoneRunning(t)
	})
}

func TestReconfigureAddsALatentSlave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil, spec{s: mustSlave(t, "bot"), wait: time.Minute})
		added := f.cloud.Slave(mustSlave(t, "new"), time.Minute, latenttest.Boot{Delay: time.Minute})
		if err := f.lc.Reconfigure(f.fakes["bot"], added); err != nil {
			t.Fatal(err)
		}
		f.wantState(t, "new", latent.Stopped)
		b := f.acquire(t.Context(), "new")
		time.Sleep(time.Minute)
		<-b.done
		if b.err != nil {
			t.Fatalf("Acquire of an added latent slave = %v\n%s", b.err, f.log)
		}
		b.b.Release()
		time.Sleep(time.Minute)
		f.wantState(t, "new", latent.Stopped)
		f.cloud.AssertNoneRunning(t)
	})
}

// A changed latent slave keeps its running instance and its settings
// until that instance stops; its next start is the new driver's.
func TestReconfigureChangeTakesEffectAtTheNextStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot", slave.MaxBuilds(1)), wait: time.Minute, boot: latenttest.Boot{Delay: time.Minute}})
		b := f.acquire(t.Context(), "bot")
		time.Sleep(time.Minute)
		<-b.done
		if b.err != nil {
			t.Fatal(b.err)
		}
		refused := errors.New("the new image does not boot")
		changed := f.cloud.Slave(mustSlave(t, "bot", slave.MaxBuilds(2)), time.Minute, latenttest.Boot{StartErr: refused})
		if err := f.lc.Reconfigure(changed); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		f.wantState(t, "bot", latent.Running)
		if st, _ := f.m.State("bot"); !st.Attached || st.MaxBuilds != 1 {
			t.Errorf("running instance disturbed by the change: %+v", st)
		}
		b.b.Release()
		time.Sleep(time.Minute) // build_wait_timeout: the old instance stops
		f.wantState(t, "bot", latent.Stopped)
		if st, _ := f.m.State("bot"); st.MaxBuilds != 2 {
			t.Errorf("max_builds %d once stopped, want the new 2", st.MaxBuilds)
		}
		if err := f.lc.Substantiate(t.Context(), "bot"); !errors.Is(err, refused) {
			t.Errorf("next start = %v, want the new driver's %v", err, refused)
		}
		f.cloud.AssertNoneRunning(t)
	})
}

// A removed latent slave fails the builds waiting for it alone, lets its
// running build finish, then is stopped and forgotten by the Lifecycle
// and the manager.
func TestReconfigureRemovesAfterTheLastBuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot", slave.MaxBuilds(1)), wait: time.Hour, boot: latenttest.Boot{Delay: time.Minute}})
		running := f.acquire(t.Context(), "bot")
		time.Sleep(time.Minute)
		<-running.done
		waiting := f.acquire(t.Context(), "bot")
		synctest.Wait()
		if err := f.lc.Reconfigure(); err != nil {
			t.Fatal(err)
		}
		<-waiting.done
		if !errors.Is(waiting.err, slave.ErrUnknownSlave) {
			t.Errorf("waiting Acquire = %v, want ErrUnknownSlave", waiting.err)
		}
		f.wantState(t, "bot", latent.Running)
		if running.b.Context().Err() != nil {
			t.Error("the running build was cancelled")
		}
		if err := f.lc.Substantiate(t.Context(), "bot"); !errors.Is(err, slave.ErrUnknownSlave) {
			t.Errorf("Substantiate of a removed slave = %v", err)
		}
		time.Sleep(time.Minute)
		running.b.Release()
		synctest.Wait()
		if st, ok := f.lc.Status("bot"); ok {
			t.Errorf("removed slave still known: %+v", st)
		}
		if _, ok := f.m.State("bot"); ok {
			t.Error("the manager still knows the removed slave")
		}
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{2 * time.Minute}) {
			t.Errorf("stops at %v, want one at 2m, after the build", got)
		}
		f.cloud.AssertNoneRunning(t)
	})
}

// A slave removed while its instance starts has the start abandoned and
// its instance stopped before it is forgotten.
func TestReconfigureRemovesWhileSubstantiating(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Hang: true}})
		f.lc.Want("bot")
		f.wantState(t, "bot", latent.Substantiating)
		if err := f.lc.Reconfigure(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, ok := f.lc.Status("bot"); ok {
			t.Error("removed slave still known")
		}
		if len(f.ops("start")) != 1 || len(f.ops("stop")) != 1 {
			t.Errorf("ledger %+v", f.cloud.Ledger())
		}
		f.cloud.AssertNoneRunning(t)
	})
}

// A latent slave that keeps failing to start sends one missing notice for
// the outage, not one per failed start; after an attach, a new outage is
// noticed again.
func TestOneMissingNoticePerOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := mustSlave(t, "bot", slave.MissingTimeout(time.Minute), slave.NotifyOnMissing("ops@example.org"))
		f := newFixture(t, latent.Config{}, nil, spec{s: s, wait: 0, boot: latenttest.Boot{Hang: true}})
		ctx, cancel := context.WithCancel(t.Context())
		for range 3 { // three failed starts, with their quarantines between
			f.lc.Want("bot")
			time.Sleep(time.Minute)
			f.wantState(t, "bot", latent.Quarantined)
			time.Sleep(time.Hour)
		}
		if st := f.status(t, "bot"); st.Failures != 3 {
			t.Fatalf("failures %d, want 3", st.Failures)
		}
		if n := len(f.sent.Missing()); n != 1 {
			t.Errorf("%d notices for one outage, want 1", n)
		}
		f.fakes["bot"].Next(latenttest.Boot{Delay: time.Second})
		b := f.acquire(ctx, "bot")
		time.Sleep(time.Second)
		<-b.done
		if b.err != nil {
			t.Fatal(b.err)
		}
		b.b.Release()
		f.wantState(t, "bot", latent.Stopped)
		f.lc.Want("bot") // a new outage
		time.Sleep(time.Minute)
		f.wantState(t, "bot", latent.Quarantined)
		if n := len(f.sent.Missing()); n != 2 {
			t.Errorf("%d notices after a second outage, want 2", n)
		}
		cancel()
	})
}

// A slave built without slave.MissingTimeout waits 20 minutes for its
// instance, and a driver that is not a BuildWaiter keeps an idle instance
// 10 minutes: the defaults of Buildbot 0.8.6's manual, whatever the
// driver.
func TestDefaultsForAnyDriver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "hangs"), boot: latenttest.Boot{Hang: true}, plain: true},
			spec{s: mustSlave(t, "boots"), boot: latenttest.Boot{Delay: time.Minute}, plain: true})
		var err error
		go func() { err = f.lc.Substantiate(t.Context(), "hangs") }()
		b := f.acquire(t.Context(), "boots")
		time.Sleep(time.Minute)
		<-b.done
		if b.err != nil {
			t.Fatal(b.err)
		}
		b.b.Release() // at 1m: idle until 11m
		time.Sleep(10*time.Minute - time.Nanosecond)
		f.wantState(t, "boots", latent.Idle)
		time.Sleep(time.Nanosecond)
		f.wantState(t, "boots", latent.Stopped)
		time.Sleep(9*time.Minute - time.Nanosecond) // at 20m - 1ns
		f.wantState(t, "hangs", latent.Substantiating)
		time.Sleep(time.Nanosecond)
		f.wantState(t, "hangs", latent.Quarantined)
		if !errors.Is(err, latent.ErrMissing) {
			t.Errorf("Substantiate = %v, want ErrMissing at 20m", err)
		}
	})
}
