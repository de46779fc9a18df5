package latent_test

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
)

func TestReaperStopsUntrackedInstancesOfThisMasterOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var orphan, foreign, oldSlave latent.Instance
		f := newFixture(t, latent.Config{ReapInterval: 5 * time.Minute}, func(c *latenttest.Cloud) {
			orphan = c.Plant("bot", masterID)
			foreign = c.Plant("bot", "master-2")
			oldSlave = c.Plant("removed-from-config", masterID)
		}, spec{s: mustSlave(t, "bot"), wait: -1, boot: latenttest.Boot{Delay: time.Minute}})

		// New reaped before it returned.
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{0, 0}) {
			t.Fatalf("stops at %v, want two at 0", got)
		}
		if got := f.cloud.Running(); !slices.Equal(got, []latent.Instance{foreign}) {
			t.Fatalf("running %v, want only %v", got, foreign)
		}
		if n := len(f.log.Matching("does not track", "instance="+orphan.ID)) + len(f.log.Matching("does not track", "instance="+oldSlave.ID)); n != 2 {
			t.Errorf("%d reap lines\n%s", n, f.log)
		}

		b := f.acquire(t.Context(), "bot") // a tracked instance is never reaped
		<-b.done
		tracked := f.status(t, "bot").Instance
		time.Sleep(time.Minute) // at 2m a crash of this master leaves one behind
		late := f.cloud.Plant("bot", masterID)
		time.Sleep(3*time.Minute - time.Nanosecond)
		synctest.Wait()
		if n := len(f.ops("stop")); n != 2 {
			t.Fatalf("reaped before the period: %d stops", n)
		}
		time.Sleep(time.Nanosecond) // at 5m
		synctest.Wait()
		if got := f.cloud.Running(); !slices.Equal(got, []latent.Instance{foreign, tracked}) {
			t.Errorf("running %v, want %v and %v (%v reaped)", got, foreign, tracked, late)
		}
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{0, 0, 5 * time.Minute}) {
			t.Errorf("stops at %v", got)
		}
		b.b.Release()
		if err := f.lc.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := f.cloud.Running(); !slices.Equal(got, []latent.Instance{foreign}) {
			t.Errorf("after Shutdown running %v", got)
		}
	})
}
