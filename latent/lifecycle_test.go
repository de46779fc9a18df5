package latent_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/internal/leakcheck"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

func TestBuildSubstantiatesAndBuildWaitTimeoutStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: 10 * time.Minute, boot: latenttest.Boot{Delay: 2 * time.Minute}})
		f.wantState(t, "bot", latent.Stopped)

		first := f.acquire(t.Context(), "bot")
		synctest.Wait()
		st := f.wantState(t, "bot", latent.Substantiating)
		if st.Instance.ID == "" || st.Instance.MasterID != masterID {
			t.Fatalf("instance %+v", st.Instance)
		}
		time.Sleep(2 * time.Minute)
		<-first.done
		if first.err != nil || first.at != 2*time.Minute {
			t.Fatalf("Acquire = %v at %v, want a build at 2m", first.err, first.at)
		}
		f.wantState(t, "bot", latent.Running)
		time.Sleep(3 * time.Minute)
		first.b.Release() // at 5m: build_wait_timeout runs until 15m
		synctest.Wait()
		f.wantState(t, "bot", latent.Idle)

		time.Sleep(5 * time.Minute) // at 10m a build starts and cancels the timer
		second := f.acquire(t.Context(), "bot")
		<-second.done
		if second.err != nil || second.at != 10*time.Minute {
			t.Fatalf("second Acquire = %v at %v", second.err, second.at)
		}
		time.Sleep(10 * time.Minute) // past 15m: still running
		synctest.Wait()
		f.wantState(t, "bot", latent.Running)
		second.b.Release() // at 20m: stop at 30m
		time.Sleep(10*time.Minute - time.Nanosecond)
		synctest.Wait()
		f.wantState(t, "bot", latent.Idle)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		f.wantState(t, "bot", latent.Stopped)
		if got, want := f.ops("stop"), []time.Duration{30 * time.Minute}; !slices.Equal(got, want) {
			t.Errorf("stops at %v, want %v", got, want)
		}
		if got := f.ops("start"); !slices.Equal(got, []time.Duration{0}) {
			t.Errorf("starts at %v, want one at 0", got)
		}
		f.cloud.AssertNoneRunning(t)
		if st, _ := f.m.State("bot"); st.Attached {
			t.Errorf("slave still attached after its instance stopped")
		}
	})
}

func TestBuildWaitTimeoutZeroStopsAfterEachBuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot", slave.MaxBuilds(2)), wait: 0, boot: latenttest.Boot{Delay: time.Minute}})
		a, b := f.acquire(t.Context(), "bot"), f.acquire(t.Context(), "bot")
		<-a.done
		<-b.done
		time.Sleep(time.Minute) // at 2m
		a.b.Release()
		synctest.Wait()
		f.wantState(t, "bot", latent.Running)
		time.Sleep(time.Minute) // at 3m
		b.b.Release()
		synctest.Wait()
		f.wantState(t, "bot", latent.Stopped)
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{3 * time.Minute}) {
			t.Errorf("stops at %v, want [3m]", got)
		}
		// The next build substantiates a fresh instance.
		c := f.acquire(t.Context(), "bot")
		<-c.done
		if c.err != nil || c.at != 4*time.Minute {
			t.Fatalf("Acquire = %v at %v", c.err, c.at)
		}
		c.b.Release()
		synctest.Wait()
		if got := f.ops("start"); !slices.Equal(got, []time.Duration{0, 3 * time.Minute}) {
			t.Errorf("starts at %v", got)
		}
		f.cloud.AssertNoneRunning(t)
	})
}

func TestNegativeBuildWaitTimeoutKeepsUntilShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: -1, boot: latenttest.Boot{Delay: time.Minute}})
		b := f.acquire(t.Context(), "bot")
		<-b.done
		b.b.Release()
		time.Sleep(100 * time.Hour)
		synctest.Wait()
		f.wantState(t, "bot", latent.Idle)
		if err := f.lc.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		noLatentGoroutines(t, f.before) // Shutdown ended them all, as Close does
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{100*time.Hour + time.Minute}) {
			t.Errorf("stops at %v", got)
		}
		f.cloud.AssertNoneRunning(t)
	})
}

func TestAttachDeadlineStopsQuarantinesAndNotifies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := mustSlave(t, "bot", slave.MissingTimeout(20*time.Minute), slave.NotifyOnMissing("ops@example.org"))
		f := newFixture(t, latent.Config{}, nil, spec{s: s, wait: time.Minute, boot: latenttest.Boot{Hang: true}})
		waiting := f.acquire(t.Context(), "bot")
		var subErr error
		var subAt time.Duration
		go func() {
			subErr = f.lc.Substantiate(t.Context(), "bot")
			subAt = f.elapsed()
		}()
		time.Sleep(20*time.Minute - time.Nanosecond)
		synctest.Wait()
		f.wantState(t, "bot", latent.Substantiating)
		if len(f.ops("stop")) != 0 {
			t.Fatal("stopped before missing_timeout")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if !errors.Is(subErr, latent.ErrMissing) || subAt != 20*time.Minute {
			t.Errorf("Substantiate = %v at %v, want ErrMissing at 20m", subErr, subAt)
		}
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{20 * time.Minute}) {
			t.Errorf("stops at %v", got)
		}
		st := f.wantState(t, "bot", latent.Quarantined)
		if !st.QuarantinedUntil.Equal(f.t0.Add(20*time.Minute+10*time.Second)) || st.Failures != 1 || !errors.Is(st.LastError, latent.ErrMissing) {
			t.Errorf("status %+v", st)
		}
		sent := f.sent.Missing()
		if len(sent) != 1 || sent[0].Slave != "bot" || sent[0].Recipients[0] != "ops@example.org" {
			t.Errorf("notified %+v", sent)
		}
		if n := len(f.log.Matching("latent substantiation failed", "slave=bot", "instance=i-", "missing_timeout")); n != 1 {
			t.Errorf("%d failure lines\n%s", n, f.log)
		}
		if err := f.lc.Substantiate(t.Context(), "bot"); !errors.Is(err, latent.ErrQuarantined) || !errors.Is(err, latent.ErrMissing) {
			t.Errorf("Substantiate while quarantined = %v", err)
		}
		// The waiting build learns why at once.
		<-waiting.done
		if !errors.Is(waiting.err, latent.ErrMissing) || waiting.at != 20*time.Minute {
			t.Errorf("Acquire = %v at %v, want ErrMissing at 20m", waiting.err, waiting.at)
		}
		// A build that asks again during the quarantine is served after the back-off.
		again := f.acquire(t.Context(), "bot")
		time.Sleep(10 * time.Second)
		synctest.Wait()
		f.wantState(t, "bot", latent.Substantiating)
		if got := f.ops("start"); !slices.Equal(got, []time.Duration{0, 20*time.Minute + 10*time.Second}) {
			t.Errorf("starts at %v", got)
		}
		select {
		case <-again.done:
			t.Error("Acquire returned")
		default:
		}
	})
}

func TestCheckerFailsAnInstanceThatDiedAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		panicked := errors.New("kernel panic")
		f := newFixture(t, latent.Config{CheckInterval: 10 * time.Second}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Delay: 25 * time.Second, Die: panicked}})
		b, err := f.m.Acquire(t.Context(), "bot")
		if b != nil || !errors.Is(err, latent.ErrDied) || !errors.Is(err, panicked) || f.elapsed() != 30*time.Second {
			t.Fatalf("Acquire = %v, %v at %v; want ErrDied with the driver's reason at 30s", b, err, f.elapsed())
		}
		synctest.Wait()
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{30 * time.Second}) {
			t.Errorf("stops at %v", got)
		}
		f.wantState(t, "bot", latent.Quarantined)
	})
}

func TestQuarantineBacksOffTo10sDoublingToAnHour(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := errors.New("InsufficientInstanceCapacity")
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{StartErr: refused}})
		ctx, cancel := context.WithCancel(t.Context())
		waiting := make(chan struct{})
		go func() { // a scheduler that asks again after each failure
			defer close(waiting)
			for ctx.Err() == nil {
				if _, err := f.m.Acquire(ctx, "bot"); !errors.Is(err, refused) && ctx.Err() == nil {
					t.Errorf("Acquire = %v, want the start's error", err)
				}
			}
		}()
		time.Sleep(5 * time.Hour)
		synctest.Wait()
		starts := f.ops("start")
		var gaps []time.Duration
		for i := 1; i < len(starts); i++ {
			gaps = append(gaps, starts[i]-starts[i-1])
		}
		want := []time.Duration{10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600}
		for i := range want {
			want[i] *= time.Second
		}
		if len(gaps) < len(want) || !slices.Equal(gaps[:len(want)], want) {
			t.Fatalf("gaps between starts %v, want %v...", gaps, want)
		}
		st := f.wantState(t, "bot", latent.Quarantined)
		if !errors.Is(st.LastError, refused) || st.Failures != len(starts) {
			t.Errorf("status %+v after %d starts", st, len(starts))
		}
		cancel()
		<-waiting
		f.cloud.AssertNoneRunning(t)
	})
}

func TestConcurrentCallersShareOneSubstantiation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Delay: time.Minute}})
		var wg sync.WaitGroup
		var builds []*build
		for range 10 {
			builds = append(builds, f.acquire(t.Context(), "bot"))
			wg.Go(func() {
				if err := f.lc.Substantiate(t.Context(), "bot"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for _, b := range builds {
			<-b.done
			if b.err != nil {
				t.Fatal(b.err)
			}
			b.b.Release()
		}
		if n := len(f.ops("start")); n != 1 {
			t.Errorf("%d starts, want 1", n)
		}
	})
}

func TestLoginsRefusedUnlessSubstantiating(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: -1, boot: latenttest.Boot{Delay: time.Minute}})
		err := f.m.Authenticate("bot", "configured-bot", "127.0.0.1:1")
		if !errors.Is(err, latent.ErrNotSubstantiating) || len(f.log.Matching("refused", "slave=bot", "not substantiating")) != 1 {
			t.Errorf("login while stopped = %v\n%s", err, f.log)
		}
		b := f.acquire(t.Context(), "bot")
		<-b.done
		first := f.fakes["bot"].Conn()
		// A second instance claims the attached slave, with either password.
		for _, pw := range []string{"configured-bot", "guess"} {
			err := f.m.Authenticate("bot", pw, "127.0.0.1:2")
			if !errors.Is(err, latent.ErrAttached) {
				t.Errorf("second login = %v, want ErrAttached", err)
			}
		}
		synctest.Wait()
		if st, _ := f.m.State("bot"); !st.Attached || st.RemoteAddr != first.RemoteAddr() || first.Context().Err() != nil {
			t.Errorf("first instance disturbed: %+v", st)
		}
		f.wantState(t, "bot", latent.Running)
		b.b.Release()
		if err := f.lc.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := f.m.Authenticate("bot", "configured-bot", "127.0.0.1:3"); !errors.Is(err, latent.ErrClosed) {
			t.Errorf("login after shutdown = %v", err)
		}
	})
}

// A driver that passes the start's password to its instance admits no
// other while the instance starts: the configured password, which an
// impostor may know, is refused then.
func TestOnlyTheStartsPasswordAdmittedWhenTheDriverPassesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Delay: time.Minute}})
		f.lc.Want("bot")
		synctest.Wait()
		if err := f.m.Authenticate("bot", "configured-bot", "127.0.0.1:1"); !errors.Is(err, slave.ErrBadPassword) {
			t.Errorf("configured password while the start's is expected = %v", err)
		}
		f.wantState(t, "bot", latent.Substantiating)
		time.Sleep(time.Minute) // the real instance boots and attaches
		f.wantState(t, "bot", latent.Idle)
	})
}

// A driver that cannot pass the start's password (an image with the
// password baked in) attaches with the configured one.
func TestConfiguredPasswordAdmittedWhileSubstantiating(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Hang: true}, plain: true})
		f.lc.Want("bot")
		synctest.Wait()
		if err := f.m.Authenticate("bot", "wrong", "127.0.0.1:1"); !errors.Is(err, slave.ErrBadPassword) {
			t.Errorf("wrong password = %v", err)
		}
		c := slavetest.Attach(t, f.m, "bot", "configured-bot", slave.Info{})
		synctest.Wait()
		f.wantState(t, "bot", latent.Idle)
		c.Drop(nil) // the machine dies: its instance is stopped
		synctest.Wait()
		f.wantState(t, "bot", latent.Stopped)
		f.cloud.AssertNoneRunning(t)
	})
}

func TestUnexpectedDetachStopsTheInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Hour, boot: latenttest.Boot{Delay: time.Minute}})
		b := f.acquire(t.Context(), "bot")
		<-b.done
		time.Sleep(time.Minute)
		if !f.fakes["bot"].Crash(errors.New("host went down")) {
			t.Fatal("nothing to crash")
		}
		synctest.Wait()
		if b.b.Context().Err() == nil {
			t.Error("the build did not learn of the loss")
		}
		f.wantState(t, "bot", latent.Stopped)
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{2 * time.Minute}) {
			t.Errorf("stops at %v", got)
		}
		if n := len(f.log.Matching("detached unexpectedly", "slave=bot", "instance=i-", "host went down")); n != 1 {
			t.Errorf("%d detach lines\n%s", n, f.log)
		}
	})
}

func TestFailedStopIsRetriedAndShutdownReportsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: 0, boot: latenttest.Boot{Delay: time.Minute}})
		denied := errors.New("UnauthorizedOperation")
		f.fakes["bot"].FailStops(denied)
		b := f.acquire(t.Context(), "bot")
		<-b.done
		b.b.Release() // at 1m
		synctest.Wait()
		st := f.wantState(t, "bot", latent.Stopping)
		if !errors.Is(st.LastError, denied) || st.Instance.ID == "" {
			t.Errorf("status %+v", st)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		f.wantState(t, "bot", latent.Stopped)
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{time.Minute, time.Minute + 10*time.Second}) {
			t.Errorf("stops at %v", got)
		}

		// Now every stop fails: Shutdown gives up at its deadline naming the instance.
		f.fakes["bot"].FailStops(slices.Repeat([]error{denied}, 100)...)
		b = f.acquire(t.Context(), "bot")
		<-b.done
		b.b.Release()
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		err := f.lc.Shutdown(ctx)
		id := f.status(t, "bot").Instance.ID
		if !errors.Is(err, context.DeadlineExceeded) || id == "" || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "UnauthorizedOperation") {
			t.Errorf("Shutdown = %v, want the deadline and instance %s", err, id)
		}
		if err := f.lc.Close(); err == nil || !strings.Contains(err.Error(), id) {
			t.Errorf("Close = %v, want instance %s left running", err, id)
		}
	})
}

func TestShutdownWaitsForBuildsAndAbandonsSubstantiations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "busy"), wait: time.Hour, boot: latenttest.Boot{Delay: time.Minute}},
			spec{s: mustSlave(t, "booting"), wait: time.Hour, boot: latenttest.Boot{Delay: time.Hour}})
		b := f.acquire(t.Context(), "busy")
		<-b.done
		f.lc.Want("booting")
		synctest.Wait()
		done := make(chan error)
		go func() { done <- f.lc.Shutdown(t.Context()) }()
		time.Sleep(time.Minute)
		synctest.Wait()
		f.wantState(t, "booting", latent.Stopped)
		f.wantState(t, "busy", latent.Running)
		b.b.Release() // at 2m
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := f.ops("stop"); !slices.Equal(got, []time.Duration{time.Minute, 2 * time.Minute}) {
			t.Errorf("stops at %v", got)
		}
		f.cloud.AssertNoneRunning(t)
		if f.lc.Want("busy"); len(f.ops("start")) != 2 {
			t.Error("Want after Shutdown started an instance")
		}
	})
}

func TestCapsOnStartingAndRunningInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var specs []spec
		for _, n := range []string{"a", "b", "c"} {
			specs = append(specs, spec{s: mustSlave(t, n), wait: 0, boot: latenttest.Boot{Delay: time.Minute}})
		}
		f := newFixture(t, latent.Config{MaxStarting: 1, MaxRunning: 2}, nil, specs...)
		var builds []*build
		for _, n := range []string{"a", "b", "c"} {
			builds = append(builds, f.acquire(t.Context(), n))
			synctest.Wait()
		}
		for i, b := range builds[:2] {
			<-b.done
			if want := time.Duration(i+1) * time.Minute; b.at != want {
				t.Errorf("build %d attached at %v, want %v (one start at a time)", i, b.at, want)
			}
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		f.wantState(t, "c", latent.Substantiating) // waits for a running slot
		if n := len(f.ops("start")); n != 2 {
			t.Errorf("%d starts with MaxRunning 2", n)
		}
		builds[0].b.Release() // "a" stops: "c" starts
		<-builds[2].done
		if want := time.Hour + 2*time.Minute + time.Minute; builds[2].at != want {
			t.Errorf("c attached at %v, want %v", builds[2].at, want)
		}
		builds[1].b.Release()
		builds[2].b.Release()
	})
}

func TestEveryTransitionIsLoggedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Delay: time.Minute}})
		b := f.acquire(t.Context(), "bot")
		<-b.done
		b.b.Release()
		time.Sleep(time.Minute)
		synctest.Wait()
		for _, want := range []string{"substantiating", "idle", "running", "stopping", "stopped"} {
			lines := f.log.Matching("msg=\"latent slave "+want+"\"", "slave=bot", "reason=")
			n := 1
			if want == "idle" {
				n = 2 // attached, then the build's end
			}
			if len(lines) != n {
				t.Errorf("%d %q transitions, want %d\n%s", len(lines), want, n, f.log)
			}
		}
		if lines := f.log.Matching("latent slave stopping", "instance=i-", "build_wait_timeout"); len(lines) != 1 {
			t.Errorf("stopping line without instance or reason\n%s", f.log)
		}
		if strings.Contains(f.log.String(), "configured-bot") {
			t.Error("a password was logged")
		}
	})
}

func TestNewRefusesMisconfiguration(t *testing.T) {
	m, err := slave.NewManager(slave.Config{}, mustSlave(t, "bot"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cloud := latenttest.NewCloud(t, m)
	bot := cloud.Slave(mustSlave(t, "bot"), 0, latenttest.Boot{})
	if _, err := latent.New(m, latent.Config{}, bot); err == nil {
		t.Error("no MasterID accepted")
	}
	if _, err := latent.New(m, latent.Config{MasterID: "m"}, bot, bot); err == nil {
		t.Error("a slave given twice accepted")
	}
	// A slave the manager does not know yet is added to it.
	lc, err := latent.New(m, latent.Config{MasterID: "m", Logger: quiet}, cloud.Slave(mustSlave(t, "other"), 0, latenttest.Boot{}))
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, ok := m.State("other"); !ok {
		t.Error("New did not add its slave to the manager")
	}
	if _, err := latent.New(m, latent.Config{MasterID: "m", Logger: quiet}, bot); !errors.Is(err, slave.ErrController) {
		t.Errorf("a second Lifecycle on one manager = %v", err)
	}
}

// earlyAttacher is a driver whose instance attaches while Start still
// runs, and whose Start then fails (and, keeping its contract, leaves
// nothing running): like an EC2 start whose elastic IP association fails
// after the slave in the instance already dialed in.
type earlyAttacher struct {
	s       *slave.Slave
	m       *slave.Manager
	conn    *slavetest.Conn
	proceed chan struct{} // the instance dies
	fail    chan struct{} // then Start fails
}

func (d *earlyAttacher) Slave() *slave.Slave             { return d.s }
func (d *earlyAttacher) BuildWaitTimeout() time.Duration { return time.Hour }
func (d *earlyAttacher) Stop(context.Context, latent.Instance) error {
	return nil
}
func (d *earlyAttacher) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	d.conn = slavetest.NewConn(slave.Info{})
	if err := d.m.Authenticate(req.Name, req.Password, d.conn.RemoteAddr()); err != nil {
		return latent.Instance{}, err
	}
	if err := d.m.Attach(ctx, req.Name, d.conn); err != nil {
		return latent.Instance{}, err
	}
	<-d.proceed
	d.conn.Drop(errors.New("instance terminated"))
	<-d.fail
	return latent.Instance{}, errors.New("associate elastic IP: failed")
}

func TestShutdownFinishesWhenStartFailsAfterTheAttach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := mustSlave(t, "bot")
		m, err := slave.NewManager(slave.Config{Logger: slog.New(slog.DiscardHandler)}, s)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		before := leakcheck.Take()
		d := &earlyAttacher{s: s, m: m, proceed: make(chan struct{}), fail: make(chan struct{})}
		lc, err := latent.New(m, latent.Config{MasterID: "m1", Logger: slog.New(slog.DiscardHandler)}, d)
		if err != nil {
			t.Fatal(err)
		}
		go lc.Substantiate(context.Background(), "bot")
		synctest.Wait() // attached; Start still runs
		shut := make(chan error)
		go func() { shut <- lc.Shutdown(context.Background()) }()
		synctest.Wait()
		close(d.proceed) // the connection goes first
		synctest.Wait()
		close(d.fail) // then Start fails
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
		noLatentGoroutines(t, before)
	})
}

func TestObserveSeesTransitionsAndReapedInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var events []latent.Event
		observe := func(ev latent.Event) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, ev)
		}
		f := newFixture(t, latent.Config{Observe: observe}, func(c *latenttest.Cloud) {
			c.Plant("bot", "master-1")
		}, spec{s: mustSlave(t, "bot"), wait: time.Minute, boot: latenttest.Boot{Delay: time.Minute}})
		b := f.acquire(t.Context(), "bot")
		<-b.done
		time.Sleep(time.Minute) // the build runs
		b.b.Release()
		time.Sleep(time.Minute) // build_wait_timeout
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		var got []string
		for _, ev := range events {
			if ev.Reaped {
				got = append(got, "reaped "+ev.Instance)
				continue
			}
			got = append(got, ev.From.String()+">"+ev.To.String())
		}
		want := []string{"reaped i-00001", "stopped>substantiating", "substantiating>idle", "idle>running", "running>idle", "idle>stopping", "stopping>stopped"}
		if !slices.Equal(got, want) {
			t.Errorf("observed %v, want %v", got, want)
		}
		if sub := events[2]; sub.Time.Sub(sub.Since) != time.Minute || sub.Instance == "" {
			t.Errorf("attach event %+v: want a minute in substantiating, with the instance", sub)
		}
	})
}

func TestABuildOnSeveralLatentSlavesStartsOneInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boot := latenttest.Boot{Delay: time.Minute}
		f := newFixture(t, latent.Config{}, nil,
			spec{s: mustSlave(t, "l1", slave.MaxBuilds(1)), wait: time.Hour, boot: boot},
			spec{s: mustSlave(t, "l2", slave.MaxBuilds(1)), wait: time.Hour, boot: boot})
		go f.m.Acquire(t.Context(), "l1", "l2")
		synctest.Wait()
		if got := len(f.cloud.Running()); got != 1 {
			t.Fatalf("one build on l1 or l2 started %d instances, want 1", got)
		}
		go f.m.Acquire(t.Context(), "l1", "l2") // a second build: l1 is already starting
		synctest.Wait()
		if got := len(f.cloud.Running()); got != 2 {
			t.Fatalf("two builds started %d instances, want 2", got)
		}
		go f.m.Acquire(t.Context(), "l1", "l2") // a third waits for a slot
		synctest.Wait()
		if got := len(f.cloud.Running()); got != 2 {
			t.Fatalf("three builds on two slaves started %d instances", got)
		}
		f.m.Close() // ends the waiting Acquires
	})
}
