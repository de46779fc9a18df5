package slave_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/slave"
)

// countingProof is a password proof that counts how often it is checked.
type countingProof struct {
	password string
	checks   *atomic.Int32
}

func (p countingProof) Proves(password string) bool {
	p.checks.Add(1)
	return slave.PasswordsEqual(p.password, password)
}

// guess tries a login and returns its error and whether the proof was
// checked.
func guess(m *slave.Manager, name, password, remote string) (err error, checked bool) {
	var n atomic.Int32
	err = m.Verify(name, countingProof{password, &n}, remote)
	return err, n.Load() > 0
}

func TestGuesserGetsTheBudgetThenIsRefusedUnchecked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "sekrit"))
		for i := range slave.DefaultRefusalBurst {
			if err, checked := guess(f.m, "bot", fmt.Sprint("guess", i), fmt.Sprintf("192.0.2.7:%d", 1000+i)); !errors.Is(err, slave.ErrBadPassword) || !checked {
				t.Fatalf("guess %d: %v, checked %v", i, err, checked)
			}
		}
		// Over budget: refused at once, the right password too, without a check.
		for _, pw := range []string{"guess-more", "sekrit"} {
			if err, checked := guess(f.m, "bot", pw, "192.0.2.7:2000"); !errors.Is(err, slave.ErrTooManyRefusals) || checked {
				t.Errorf("login with %q over budget: %v, checked %v", pw, err, checked)
			}
		}
		// Another address is not affected.
		if err, _ := guess(f.m, "bot", "sekrit", "192.0.2.8:1"); err != nil {
			t.Errorf("right password from another address: %v", err)
		}
		if err, checked := guess(f.m, "bot", "wrong", "192.0.2.8:2"); !errors.Is(err, slave.ErrBadPassword) || !checked {
			t.Errorf("wrong password from another address: %v, checked %v", err, checked)
		}

		// The back-off doubles, one login checked after each, up to its cap.
		for _, backoff := range []time.Duration{1, 2, 4, 8, 16, 32, 60, 60} {
			backoff *= time.Second
			time.Sleep(backoff - time.Nanosecond)
			if err, checked := guess(f.m, "bot", "sekrit", "192.0.2.7:3000"); !errors.Is(err, slave.ErrTooManyRefusals) || checked {
				t.Fatalf("login just before a back-off of %v ends: %v, checked %v", backoff, err, checked)
			}
			time.Sleep(time.Nanosecond)
			if err, checked := guess(f.m, "bot", "wrong", "192.0.2.7:3000"); !errors.Is(err, slave.ErrBadPassword) || !checked {
				t.Fatalf("login after a back-off of %v: %v, checked %v", backoff, err, checked)
			}
			if err, checked := guess(f.m, "bot", "wrong", "192.0.2.7:3000"); !errors.Is(err, slave.ErrTooManyRefusals) || checked {
				t.Fatalf("second login after a back-off of %v: %v, checked %v", backoff, err, checked)
			}
		}

		// Quiet for the back-off and the whole burst's refill: a fresh budget.
		time.Sleep(time.Minute + slave.DefaultRefusalBurst*slave.DefaultRefusalInterval)
		if err, _ := guess(f.m, "bot", "sekrit", "192.0.2.7:4000"); err != nil {
			t.Fatalf("right password once quiet: %v", err)
		}
		for i := range slave.DefaultRefusalBurst {
			if err, checked := guess(f.m, "bot", "wrong", "192.0.2.7:4000"); !errors.Is(err, slave.ErrBadPassword) || !checked {
				t.Fatalf("guess %d once quiet: %v, checked %v", i, err, checked)
			}
		}
		time.Sleep(slave.DefaultRefusalInterval)
		if err, checked := guess(f.m, "bot", "wrong", "192.0.2.7:4000"); !checked {
			t.Fatalf("one more guess after one interval: %v, not checked", err)
		}
	})
}

func TestConcurrentGuessesStayWithinTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{RefusalBurst: 5}, mustNew(t, "bot", "sekrit"))
		f.m.Authenticate("bot", "wrong", "192.0.2.7:1") // the address has a record now
		var checks atomic.Int32
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() { f.m.Verify("bot", countingProof{fmt.Sprint(i), &checks}, "192.0.2.7:1") })
		}
		wg.Wait()
		if n := checks.Load(); n != 4 {
			t.Errorf("%d of 100 concurrent guesses checked, want the 4 left of the budget", n)
		}
	})
}

func TestAStormOfRightLoginsFromOneAddressIsNotLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "sekrit"))
		var wg sync.WaitGroup
		var refused atomic.Int32
		for range 1000 {
			wg.Go(func() {
				if f.m.Authenticate("bot", "sekrit", "192.0.2.7:1") != nil {
					refused.Add(1)
				}
			})
		}
		wg.Wait()
		if n := refused.Load(); n != 0 {
			t.Errorf("%d of 1000 concurrent right logins from one address refused", n)
		}
	})
}

func TestRightPasswordsDoNotSpendTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{RefusalBurst: 3}, mustNew(t, "bot", "sekrit"))
		for range 100 {
			if err := f.m.Authenticate("bot", "sekrit", "192.0.2.7:1"); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			if err, checked := guess(f.m, "bot", "wrong", "192.0.2.7:1"); !checked {
				t.Fatalf("guess %d after right logins: %v, not checked", i, err)
			}
		}
	})
}

func TestNegativeRefusalBurstTurnsTheLimitOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{RefusalBurst: -1}, mustNew(t, "bot", "sekrit"))
		for i := range 100 {
			if err, checked := guess(f.m, "bot", "wrong", "192.0.2.7:1"); !errors.Is(err, slave.ErrBadPassword) || !checked {
				t.Fatalf("guess %d: %v, checked %v", i, err, checked)
			}
		}
	})
}

func TestIPv6GuessesCountPerSlash64(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{RefusalBurst: 2}, mustNew(t, "bot", "sekrit"))
		guess(f.m, "bot", "wrong", "[2001:db8:1:2::1]:1")
		guess(f.m, "bot", "wrong", "[2001:db8:1:2:ffff::9]:1")
		if err, checked := guess(f.m, "bot", "sekrit", "[2001:db8:1:2::77]:1"); !errors.Is(err, slave.ErrTooManyRefusals) || checked {
			t.Errorf("third login from the same /64: %v, checked %v", err, checked)
		}
		if err, _ := guess(f.m, "bot", "sekrit", "[2001:db8:1:3::1]:1"); err != nil {
			t.Errorf("login from another /64: %v", err)
		}
	})
}

func TestOneWrongPasswordIsLoggedAtOnceWithItsReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "sekrit"))
		f.m.Authenticate("bot", "old-password", "192.0.2.7:4242")
		lines := f.log.Matching("slave connection refused")
		if len(lines) != 1 || !strings.Contains(lines[0], "remote=192.0.2.7:4242") || !strings.Contains(lines[0], "slave=bot") ||
			!strings.Contains(lines[0], `reason="wrong password"`) {
			t.Errorf("log after one wrong password: %q", f.log.Lines())
		}
		// A minute later, the next one is logged at once again.
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(f.log.Lines()); n != 1 {
			t.Errorf("%d log lines a minute after one refusal, want 1: %q", n, f.log.Lines())
		}
		f.m.Authenticate("nobody", "x", "192.0.2.7:4243")
		if lines := f.log.Matching("slave connection refused", "slave=nobody", "unknown slave name"); len(lines) != 1 {
			t.Errorf("log after a refusal a minute later: %q", f.log.Lines())
		}
	})
}

func TestBurstOfRefusalsIsSummarisedInOneLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "sekrit"))
		events, cancel := f.m.Subscribe()
		defer cancel()
		for i := range 50 {
			f.m.Authenticate("bot", fmt.Sprint("guess-", i), fmt.Sprintf("192.0.2.7:%d", 1000+i))
		}
		f.m.Authenticate("bot", "wrong", "192.0.2.8:1") // another address: logged at once
		if lines := f.log.Lines(); len(lines) != 2 || !strings.Contains(lines[0], "remote=192.0.2.7:1000") || !strings.Contains(lines[1], "remote=192.0.2.8:1") {
			t.Fatalf("log during the burst: %q", lines)
		}
		time.Sleep(time.Minute - time.Nanosecond)
		synctest.Wait()
		if n := len(f.log.Lines()); n != 2 {
			t.Fatalf("%d lines before the minute is over", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		lines := f.log.Matching("49 refusals from 192.0.2.7 in the last minute")
		if len(lines) != 1 || !strings.Contains(lines[0], "unchecked=40") || len(f.log.Lines()) != 3 {
			t.Errorf("log after the minute: %q", f.log.Lines())
		}
		for _, line := range f.log.Lines() {
			if strings.Contains(line, "guess-") {
				t.Errorf("a password was logged: %s", line)
			}
		}
		// Events: each checked refusal, and the start of the block.
		var refused, unchecked int
		for more := true; more; {
			synctest.Wait()
			select {
			case ev := <-events:
				if ev.Kind == slave.Refused {
					refused++
					if errors.Is(ev.Err, slave.ErrTooManyRefusals) {
						unchecked++
					}
				}
			default:
				more = false
			}
		}
		if refused != 12 || unchecked != 1 {
			t.Errorf("%d Refused events, %d unchecked; want 12, 1", refused, unchecked)
		}

		// A steady guesser costs one line a minute.
		for range 3 {
			for range 60 {
				time.Sleep(time.Second)
				f.m.Authenticate("bot", "wrong", "192.0.2.7:1")
			}
			synctest.Wait()
		}
		if n := len(f.log.Matching("refusals from 192.0.2.7 in the last minute")); n != 4 {
			t.Errorf("%d summary lines after 3 more minutes of guessing, want 4: %q", n, f.log.Lines())
		}
	})
}

func TestCloseLogsPendingSummaries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, slave.Config{}, mustNew(t, "bot", "sekrit"))
		for range 3 {
			f.m.Authenticate("bot", "wrong", "192.0.2.7:1")
		}
		f.m.Close()
		if lines := f.log.Matching("2 refusals from 192.0.2.7"); len(lines) != 1 {
			t.Errorf("log after Close: %q", f.log.Lines())
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(f.log.Lines()); n != 2 {
			t.Errorf("%d lines after Close and an hour, want 2: %q", n, f.log.Lines())
		}
	})
}
