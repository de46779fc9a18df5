package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
)

const missingTimeout = 500 * time.Millisecond

// leaveA starts masters a and b, b sweeping as the leader does, and bot
// attached to a and then lost.
func leaveA(t *testing.T) (a, b *master) {
	t.Helper()
	srv := clustertest.Start(t)
	opts := []slave.Option{slave.MissingTimeout(missingTimeout), slave.NotifyOnMissing("ops@example.org")}
	a, b = newMaster(t, srv, "a", time.Second, opts...), newMaster(t, srv, "b", time.Second, opts...)
	sweep(t, b)
	c, err := a.attach(t)
	if err != nil {
		t.Fatal(err)
	}
	c.Drop(nil)
	soon(t, "the detach recorded on a", func() bool { return owner(t, a) == "" })
	return a, b
}

// sweep runs b's SweepMissing, as the leader does, until the test ends.
func sweep(t *testing.T, ms *master) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ms.member.SweepMissing(ctx, ms.sent.SlaveMissing)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// notices counts the missing notices of the slave every master sent.
func notices(name string, ms ...*master) int {
	n := 0
	for _, m := range ms {
		for _, sent := range m.sent.Missing() {
			if sent.Slave == name {
				n++
			}
		}
	}
	return n
}

// noticeOf is the notice of the slave that ms sent.
func noticeOf(name string, ms *master) notify.Missing {
	for _, sent := range ms.sent.Missing() {
		if sent.Slave == name {
			return sent
		}
	}
	return notify.Missing{Recipients: []string{"none sent"}}
}

// after waits, with a deadline, until d has passed since start: the negative
// checks below wait out a missing_timeout on a real clock.
func after(start time.Time, d time.Duration) {
	for time.Since(start) < d {
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMissingNotSentForASlaveThatMovedToAnotherMaster(t *testing.T) {
	a, b := leaveA(t)
	left := time.Now()
	if _, err := b.attach(t); err != nil {
		t.Fatal(err)
	}
	after(left, 3*missingTimeout)
	if n := notices("bot", a, b); n != 0 {
		t.Errorf("%d missing notices for a slave attached to b, want none", n)
	}
	if st, _ := a.m.State("bot"); st.Missing {
		t.Error("a marks the slave missing although b holds it")
	}
}

func TestMissingSentOnceByTheMasterItLeft(t *testing.T) {
	a, b := leaveA(t)
	soon(t, "one missing notice", func() bool { return notices("bot", a, b) == 1 })
	after(time.Now(), 2*time.Second) // b's sweeps (every LeaseTTL = 1 s) send nothing more
	if got := noticeOf("bot", a); got.Recipients[0] != "ops@example.org" {
		t.Fatalf("a sent %+v, want bot's notice to ops@example.org", got)
	}
	if n := notices("bot", b); n != 0 {
		t.Errorf("b sent %d notices, want none", n)
	}
	if st, _ := a.m.State("bot"); !st.Missing {
		t.Error("a does not mark the slave missing")
	}
}

func TestMissingSentOnceWhenTheMasterItLeftDies(t *testing.T) {
	a, b := leaveA(t)
	a.cli.Close() // a dies within missing_timeout: its lease (TTL 1 s) expires
	// due when etcd ends the notice's lease (etcd's minimum TTL: ~2 s)
	eventually(t, 15*time.Second, "b sends the notice a owed", func() bool { return notices("bot", b) == 1 })
	after(time.Now(), 2*time.Second)
	if n := notices("bot", a, b); n != 1 {
		t.Errorf("%d notices, want 1", n)
	}
	if got := noticeOf("bot", b); got.Recipients[0] != "ops@example.org" {
		t.Errorf("b sent %+v, want bot's notice to ops@example.org", got)
	}
}

func TestMissingSentOnceForASlaveNoMasterSaw(t *testing.T) {
	a, b := leaveA(t) // bot2 is configured on both and never attaches
	soon(t, "bot2's notice", func() bool { return notices("bot2", a, b) == 1 })
	after(time.Now(), 2*time.Second) // b's sweeps, and the other master's timer, send nothing more
	if n := notices("bot2", a, b); n != 1 {
		t.Errorf("%d notices of bot2, want 1", n)
	}
	resp, err := a.cli.Get(t.Context(), "/test/missing/bot2")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("bot2's record after the notice: %v, %v; want it kept, marked sent", resp, err)
	}
	// It attaches, then is lost again: a new loss, a new notice.
	c, err := b.attachAs(t, "bot2")
	if err != nil {
		t.Fatal(err)
	}
	c.Drop(nil)
	soon(t, "bot2's second notice", func() bool { return notices("bot2", a, b) == 2 })
}
