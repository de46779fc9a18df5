package client

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/protocol/wire"
)

// testSlave returns a slave whose msgpack dial is replaced by dial; its
// Master is cfg.Master, or "127.0.0.1:9" if empty.
func testSlave(t *testing.T, cfg Config, dial func(ctx context.Context, url string) (wire.Transport, error)) *Slave {
	t.Helper()
	cfg.Master = cmp.Or(cfg.Master, "127.0.0.1:9")
	cfg.Protocol, cfg.Name, cfg.Password, cfg.Basedir = Msgpack, "bot", "pw", t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.dial = dial
	return s
}

func TestRunBacksOffAndGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		s := testSlave(t, Config{MinBackoff: time.Second, MaxBackoff: 4 * time.Second, MaxRefusals: 5},
			func(context.Context, string) (wire.Transport, error) {
				at = append(at, time.Since(start))
				return nil, &wire.HandshakeError{StatusCode: 401}
			})
		if err := s.Run(t.Context()); !errors.Is(err, ErrRefused) {
			t.Fatalf("Run = %v", err)
		}
		if len(at) != 5 {
			t.Fatalf("%d attempts, want 5", len(at))
		}
		bounds := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
		for i, max := range bounds {
			if gap := at[i+1] - at[i]; gap < max/2 || gap > max {
				t.Errorf("wait %d was %v, want within [%v, %v]", i, gap, max/2, max)
			}
		}
	})
}

// attempt is one dial of a scripted master.
type attempt struct {
	url string
	at  time.Duration // since the script started
}

// attaches plays a master that attaches the slave, then drops it.
func attaches(t *testing.T) func(c *wire.Conn) {
	return func(c *wire.Conn) {
		if _, err := c.Call(t.Context(), "get_worker_info", nil); err != nil {
			t.Error(err)
		}
		c.Close()
	}
}

// shutsDown plays a master that asks the slave to shut down.
func shutsDown(t *testing.T) func(c *wire.Conn) {
	return func(c *wire.Conn) {
		if _, err := c.Call(t.Context(), "shutdown", nil); err != nil {
			t.Error(err)
		}
	}
}

// script returns a dial that answers the n-th attempt with plays[n]: nil
// is a refusal by the network, else a connection the play runs on as
// the master. The attempts are recorded; done is closed once the last
// play's connection has ended.
func script(t *testing.T, plays ...func(c *wire.Conn)) (dial func(context.Context, string) (wire.Transport, error), attempts *[]attempt, done <-chan struct{}) {
	start := time.Now()
	attempts = &[]attempt{}
	finished := make(chan struct{})
	return func(_ context.Context, url string) (wire.Transport, error) {
		*attempts = append(*attempts, attempt{url, time.Since(start)})
		n := len(*attempts)
		if n > len(plays) {
			t.Fatalf("attempt %d beyond the script", n)
		}
		play := plays[n-1]
		if play == nil {
			return nil, errors.New("connection refused")
		}
		slaveEnd, masterEnd := wire.Pipe()
		c := wire.NewConn(masterEnd, func(context.Context, wire.Message) (any, error) { return nil, nil })
		go func() {
			go c.Serve()
			play(c)
			<-c.Context().Done()
			if n == len(plays) {
				close(finished)
			}
		}()
		return slaveEnd, nil
	}, attempts, finished
}

func TestRunResetsBackoffAfterAttachAndStopsOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dial, attempts, done := script(t, nil, nil, attaches(t), shutsDown(t))
		s := testSlave(t, Config{MinBackoff: time.Second, MaxBackoff: time.Hour}, dial)
		if err := s.Run(t.Context()); err != nil {
			t.Fatalf("Run = %v, want nil after shutdown", err)
		}
		<-done
		at := *attempts
		if len(at) != 4 {
			t.Fatalf("attempts %v", at)
		}
		if gap := at[3].at - at[2].at; gap > time.Second {
			t.Errorf("after an attach the wait was %v, want at most MinBackoff", gap)
		}
		if gap := at[2].at - at[1].at; gap < time.Second {
			t.Errorf("second wait %v, want doubled", gap)
		}
	})
}

// With several masters, each failed attempt and each lost connection
// moves on to the next master (after the last, the first), and the waits
// between attempts double across masters until an attach resets them.
func TestRunTriesTheNextMasterWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const a, b, c = "ws://a.invalid/", "ws://b.invalid/", "ws://c.invalid/"
		dial, attempts, done := script(t,
			nil,         // a: unreachable
			nil,         // b: unreachable
			attaches(t), // c: attaches, then is lost
			nil,         // a: unreachable
			nil,         // b: unreachable
			nil,         // c: unreachable
			shutsDown(t))
		s := testSlave(t, Config{Master: a + "," + b + ", " + c, MinBackoff: time.Second, MaxBackoff: 3 * time.Second}, dial)
		if err := s.Run(t.Context()); err != nil {
			t.Fatalf("Run = %v, want nil after shutdown", err)
		}
		<-done
		at := *attempts
		var urls []string
		for _, x := range at {
			urls = append(urls, x.url)
		}
		if want := []string{a, b, c, a, b, c, a}; !slices.Equal(urls, want) {
			t.Fatalf("dialed %v, want %v", urls, want)
		}
		// The upper bound of each wait: it doubles up to MaxBackoff, and
		// starts again from MinBackoff after c attached.
		for i, max := range []time.Duration{time.Second, 2 * time.Second, time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
			if gap := at[i+1].at - at[i].at; gap < max/2 || gap > max {
				t.Errorf("wait %d (%s to %s) was %v, want within [%v, %v]", i+1, at[i].url, at[i+1].url, gap, max/2, max)
			}
		}
	})
}

func TestWorkerInfoReadsOSRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "os-release")
	content := "# comment\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nEMPTY=\nID=debian\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	info := map[string]any{}
	readOSRelease(path, info)
	want := map[string]any{"os_name": "Debian GNU/Linux", "os_version_id": "12", "os_id": "debian"}
	if len(info) != len(want) {
		t.Fatalf("info %v", info)
	}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("%s = %v, want %v", k, info[k], v)
		}
	}
}
