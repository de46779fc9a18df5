package status_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// wantSeries checks that the metric family name has exactly the series
// given, as lines of the text format.
func wantSeries(t *testing.T, f *fixture, name string, series ...string) {
	t.Helper()
	n, err := testutil.GatherAndCount(f.reg, name)
	if err != nil || n != len(series) {
		t.Errorf("%s has %d series (%v), want %d", name, n, err, len(series))
	}
	wantLines(t, f, series...)
}

// scrape returns the text of "/metrics".
func scrape(t *testing.T, f *fixture) string {
	t.Helper()
	return get(t, f.st.Handler(), "/metrics").Body.String()
}

// wantLines checks that the scraped metrics hold every line of want.
func wantLines(t *testing.T, f *fixture, want ...string) {
	t.Helper()
	got := scrape(t, f)
	for _, line := range want {
		if !strings.Contains(got, "\n"+line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
}

func TestMetricsSlaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{}, &recorder{})
		wantLines(t, f, "buildslave_slaves_attached 0", "buildslave_slaves_configured 4")
		slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{})
		wantLines(t, f, "buildslave_slaves_attached 1", "buildslave_slaves_configured 4")
	})
}

func TestMetricsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{}, &recorder{})
		for _, login := range []struct{ name, password string }{
			{"nobody", "x"},
			{"bot-linux", "wrong"},
			{"bot-evil", "wrong"},
			{"local1", "pw-local1"}, // stopped: no substantiation waits for it
		} {
			if err := f.m.Authenticate(login.name, login.password, "127.0.0.1:1"); err == nil {
				t.Fatalf("login as %s accepted", login.name)
			}
		}
		slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{})
		if err := f.m.Attach(t.Context(), "bot-linux", slavetest.NewConn(slave.Info{})); !errors.Is(err, slave.ErrDuplicate) {
			t.Fatalf("second attach: %v", err)
		}
		synctest.Wait()
		wantSeries(t, f, "buildslave_logins_refused_total",
			`buildslave_logins_refused_total{reason="bad_password"} 2`,
			`buildslave_logins_refused_total{reason="duplicate"} 1`,
			`buildslave_logins_refused_total{reason="latent_not_substantiating"} 1`,
			`buildslave_logins_refused_total{reason="unknown_slave"} 1`,
		)
	})
}

func TestMetricsBuilds(t *testing.T) {
	f := newFixture(t, latenttest.Boot{}, &recorder{})
	x := f.st.Metrics()
	x.BuildStarted("hello")
	x.BuildStarted("hello")
	x.BuildStarted("world")
	x.BuildFinished("hello", "success", 90*time.Second)
	x.BuildFinished("world", "failure", 3*time.Second)
	wantSeries(t, f, "buildslave_builds_running",
		`buildslave_builds_running{builder="hello"} 1`,
		`buildslave_builds_running{builder="world"} 0`,
	)
	wantSeries(t, f, "buildslave_builds_finished_total",
		`buildslave_builds_finished_total{builder="hello",result="success"} 1`,
		`buildslave_builds_finished_total{builder="world",result="failure"} 1`,
	)
	wantLines(t, f,
		`buildslave_build_duration_seconds_bucket{builder="hello",le="64"} 0`,
		`buildslave_build_duration_seconds_bucket{builder="hello",le="128"} 1`,
		`buildslave_build_duration_seconds_sum{builder="hello"} 90`,
		`buildslave_build_duration_seconds_count{builder="hello"} 1`,
		`buildslave_build_duration_seconds_sum{builder="world"} 3`,
	)
}

func TestMetricsLatent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{Delay: 30 * time.Second}, &recorder{})
		f.cloud.Plant("local1", masterID) // left behind by a crashed master
		if reaped, err := f.lc.Reap(t.Context()); len(reaped) != 1 || err != nil {
			t.Fatalf("Reap = %v, %v", reaped, err)
		}

		f.lc.Want("local1") // boots for 30 s, attaches, stops a minute later
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		f.local.Next(latenttest.Boot{StartErr: errors.New("InsufficientInstanceCapacity")})
		f.lc.Want("local1") // fails at once
		synctest.Wait()
		if st, _ := f.lc.Status("local1"); st.State.String() != "quarantined" {
			t.Fatalf("local1 is %s (%s), want quarantined", st.State, st.Reason)
		}

		wantLines(t, f,
			`buildslave_latent_instances_reaped_total 1`,
			`buildslave_latent_substantiations_started_total{slave="local1"} 2`,
			`buildslave_latent_substantiations_succeeded_total{slave="local1"} 1`,
			`buildslave_latent_substantiations_failed_total{slave="local1"} 1`,
			`buildslave_latent_substantiation_duration_seconds_bucket{result="success",le="16"} 0`,
			`buildslave_latent_substantiation_duration_seconds_bucket{result="success",le="32"} 1`,
			`buildslave_latent_substantiation_duration_seconds_sum{result="success"} 30`,
			`buildslave_latent_substantiation_duration_seconds_count{result="success"} 1`,
			`buildslave_latent_substantiation_duration_seconds_sum{result="failure"} 0`,
			`buildslave_latent_substantiation_duration_seconds_count{result="failure"} 1`,
		)
	})
}

// TestMetricsMail counts the manager's attempts to tell of a missing slave:
// the first fails, the manager's default retry succeeds.
func TestMetricsMail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{fail: []error{errors.New("421 try again later")}}
		f := newFixture(t, latenttest.Boot{}, rec)
		conn := slavetest.Attach(t, f.m, "bot-solaris", "pw-bot-solaris", slave.Info{})
		conn.Drop(nil)
		time.Sleep(time.Hour + time.Minute) // missing_timeout, then the retry
		synctest.Wait()
		wantLines(t, f,
			`buildslave_missing_mails_total{result="failed"} 1`,
			`buildslave_missing_mails_total{result="sent"} 1`,
		)
	})
}

// TestNotifierKeepsRetrying checks that a wrapped *notify.Retrying keeps
// its settings, so that the manager does not retry it again.
func TestNotifierKeepsRetrying(t *testing.T) {
	f := newFixture(t, latenttest.Boot{}, &recorder{})
	rec := &recorder{fail: []error{errors.New("550 no such user")}}
	n := f.st.Metrics().Notifier(&notify.Retrying{Notifier: rec, Retries: -1, Logger: quiet}, slog.Default())
	r, ok := n.(*notify.Retrying)
	if !ok || r.Retries != -1 || r.Logger != quiet { // its own Logger, not the master's
		t.Fatalf("Notifier = %#v, want a *notify.Retrying with its settings", n)
	}
	if err := n.SlaveMissing(context.Background(), notify.Missing{Slave: "bot-solaris", Recipients: []string{"a@b"}}); err == nil {
		t.Fatal("SlaveMissing succeeded, want the failure")
	}
	if rec.calls != 1 {
		t.Errorf("%d attempts, want 1", rec.calls)
	}
	wantLines(t, f, `buildslave_missing_mails_total{result="failed"} 1`)
}

func TestMetricsLatentInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{Delay: time.Minute}, &recorder{})
		wantSeries(t, f, "buildslave_latent_instances_running", `buildslave_latent_instances_running{kind="ec2"} 0`)
		f.lc.Want("local1")
		synctest.Wait()
		wantSeries(t, f, "buildslave_latent_instances_running", `buildslave_latent_instances_running{kind="ec2"} 1`)
		time.Sleep(90 * time.Second) // booted after a minute and attached: still one instance
		synctest.Wait()
		if st, _ := f.lc.Status("local1"); st.State.String() != "idle" {
			t.Fatalf("local1 is %v", st.State)
		}
		wantSeries(t, f, "buildslave_latent_instances_running", `buildslave_latent_instances_running{kind="ec2"} 1`)
		time.Sleep(time.Minute) // past build_wait_timeout: stopped
		synctest.Wait()
		if st, _ := f.lc.Status("local1"); st.State.String() != "stopped" {
			t.Fatalf("local1 is %v", st.State)
		}
		wantSeries(t, f, "buildslave_latent_instances_running", `buildslave_latent_instances_running{kind="ec2"} 0`)
	})
}
