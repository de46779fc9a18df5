package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/protocol/wire"
)

func TestBackoffDoublesWithJitterUpToMax(t *testing.T) {
	b := newBackoff(time.Second, 5*time.Second)
	b.Rand = func() float64 { return 0.999999 }
	var got []time.Duration
	for range 5 {
		got = append(got, b.wait().Round(time.Millisecond))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	b.Rand = func() float64 { return 0 }
	if d := b.wait(); d != 2500*time.Millisecond {
		t.Errorf("lowest jitter %v, want half of 5s", d)
	}
	b.reset()
	if d := b.wait(); d != 500*time.Millisecond {
		t.Errorf("after reset %v", d)
	}
}

// testSlave returns a slave whose dial is replaced by dial.
func testSlave(t *testing.T, cfg Config, dial func(ctx context.Context) (wire.Transport, error)) *Slave {
	t.Helper()
	cfg.Master, cfg.Protocol, cfg.Name, cfg.Password, cfg.Basedir = "127.0.0.1:9", Msgpack, "bot", "pw", t.TempDir()
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
			func(context.Context) (wire.Transport, error) {
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

func TestRunResetsBackoffAfterAttachAndStopsOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var at []time.Duration
		masters := []func(c *wire.Conn){
			nil, // refused by the network
			nil, // refused by the network
			func(c *wire.Conn) { // attaches, then drops the slave
				if _, err := c.Call(t.Context(), "get_worker_info", nil); err != nil {
					t.Error(err)
				}
				c.Close()
			},
			func(c *wire.Conn) { // asks for a shutdown
				if _, err := c.Call(t.Context(), "shutdown", nil); err != nil {
					t.Error(err)
				}
			},
		}
		done := make(chan struct{})
		s := testSlave(t, Config{MinBackoff: time.Second, MaxBackoff: time.Hour},
			func(context.Context) (wire.Transport, error) {
				at = append(at, time.Since(start))
				play := masters[len(at)-1]
				if play == nil {
					return nil, errors.New("connection refused")
				}
				slaveEnd, masterEnd := wire.Pipe()
				c := wire.NewConn(masterEnd, func(context.Context, wire.Message) (any, error) { return nil, nil })
				last := len(at) == len(masters)
				go func() {
					go c.Serve()
					play(c)
					<-c.Context().Done()
					if last {
						close(done)
					}
				}()
				return slaveEnd, nil
			})
		if err := s.Run(t.Context()); err != nil {
			t.Fatalf("Run = %v, want nil after shutdown", err)
		}
		<-done
		if len(at) != 4 {
			t.Fatalf("attempts at %v", at)
		}
		if gap := at[3] - at[2]; gap > time.Second {
			t.Errorf("after an attach the wait was %v, want at most MinBackoff", gap)
		}
		if gap := at[2] - at[1]; gap < time.Second {
			t.Errorf("second wait %v, want doubled", gap)
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
