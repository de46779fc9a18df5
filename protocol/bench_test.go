package protocol

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/remote"

	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/slave"
)

var stormBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "loadslave")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "loadslave")
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../internal/loadslave").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// BenchmarkAttachStorm has N slaves attach to a Handler with a
// slave.Manager of N slaves, all dialing at once or 50 at a time, and
// reports the time until the manager has attached them all, the slaves
// the load generator saw dropped, the master's heap, goroutine stacks and
// RSS per idle attached slave (rss-KiB/slave after a GC that returns free
// memory to the OS; rss-at-attach-KiB/slave read at the last attach, as
// the bench reads the example master's), and its CPU time per attach. The
// slaves run in a child process (internal/loadslave, the bench's load
// generator), so the figures are the master's alone and the two ends'
// sockets do not share one file limit. Issue 13's bars: at most 12 KiB of
// RSS per idle slave and 150 µs of CPU per attach, at any concurrency.
func BenchmarkAttachStorm(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, conc := range []int{0, 50} {
			at := "all"
			if conc > 0 {
				at = strconv.Itoa(conc)
			}
			b.Run(fmt.Sprintf("slaves=%d/at-once=%s", n, at), func(b *testing.B) {
				for b.Loop() {
					s := startStorm(b, n, conc, slave.DefaultKeepaliveInterval)
					s.report(b)
					s.stop()
				}
			})
		}
	}
}

// BenchmarkIdleKeepalive attaches 10,000 slaves that then stay idle but
// for the master's keepalives, every interval, and reports the master's
// CPU time over a window (the longer of 10 s and the interval) after the
// attach storm: per keepalive sent, and as a share of one core; and the
// memory per slave once every slave has answered keepalives. Issue 13's
// bar: at most 1 % of a core with an interval of 60 s.
func BenchmarkIdleKeepalive(b *testing.B) {
	const n = 10000
	for _, interval := range []time.Duration{5 * time.Second, time.Minute} {
		b.Run(fmt.Sprintf("slaves=%d/interval=%v", n, interval), func(b *testing.B) {
			for b.Loop() {
				s := startStorm(b, n, 50, interval)
				// Start the window once the first keepalives, sent
				// interval after each attach, are under way.
				window := max(10*time.Second, interval)
				time.Sleep(interval)
				cpu0, ka0, t0 := cpuTime(), s.keepalives.Load(), time.Now()
				time.Sleep(window)
				cpu, ka, elapsed := cpuTime()-cpu0, s.keepalives.Load()-ka0, time.Since(t0)
				s.reportMemory(b) // once every slave has answered keepalives
				s.stop()
				b.ReportMetric(float64(ka), "keepalives")
				b.ReportMetric(float64(cpu.Microseconds())/float64(ka), "cpu-µs/keepalive")
				b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%-of-a-core")
			}
		})
	}
}

// stormRun is a manager and Handler with n slaves attached by the load
// generator.
type stormRun struct {
	n          int
	elapsed    time.Duration // from "go" to the last attach
	dropped    int           // dials and connections the load generator saw fail
	cpu        time.Duration // master CPU time during the storm
	rssAttach  int           // RSS growth at the last attach, KiB
	before     runtime.MemStats
	rss0, g0   int
	keepalives atomic.Int64 // keepalives answered
	stop       func()
}

// startStorm starts a master with n slaves, each with keepalive interval
// ka, and has the load generator attach them all, conc at a time (0: all
// at once).
func startStorm(b *testing.B, n, conc int, ka time.Duration) *stormRun {
	bin, err := stormBinary()
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	slaves := make([]*slave.Slave, n)
	for i := range slaves {
		s, err := slave.New(fmt.Sprintf("s%d", i), "pw", slave.KeepaliveInterval(ka))
		if err != nil {
			b.Fatal(err)
		}
		slaves[i] = s
	}
	m, err := slave.NewManager(slave.Config{Logger: log}, slaves...)
	if err != nil {
		b.Fatal(err)
	}
	s := &stormRun{n: n}
	h := &Handler{Manager: countingManager{m, &s.keepalives}, Builders: []string{"b1"}, Logger: log}
	// All n dial at once from one address: let them past the caps on
	// connections before login.
	srv := &Server{Handler: h, Limiter: &connlimit.Limiter{MaxPending: n, MaxPendingPerIP: n}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(l); close(served) }()

	child := exec.Command(bin, "-url", "ws://"+l.Addr().String()+"/", "-n", strconv.Itoa(n),
		"-concurrency", strconv.Itoa(conc), "-timeout", "2m")
	child.Env = append(os.Environ(), "LOADSLAVE_PASSWORD=pw")
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	s.stop = func() {
		stdin.Close()
		child.Wait()
		srv.Close()
		<-served
		m.Close()
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		s.stop()
		b.Fatalf("load generator: %q", lines.Text())
	}

	events, cancel := m.Subscribe()
	runtime.GC()
	debug.FreeOSMemory()
	runtime.ReadMemStats(&s.before)
	s.rss0, s.g0 = rssKiB(b), runtime.NumGoroutine()
	cpu0 := cpuTime()
	start := time.Now()
	io.WriteString(stdin, "go\n")
	for attached := 0; attached < n; {
		if ev := <-events; ev.Kind == slave.Attached {
			attached++
		}
	}
	s.elapsed = time.Since(start)
	if !lines.Scan() {
		s.stop()
		b.Fatalf("load generator: %v", lines.Err())
	}
	f := strings.Fields(lines.Text())
	if len(f) != 5 || f[0] != "attached" || f[1] != strconv.Itoa(n) {
		s.stop()
		b.Fatalf("load generator: %q", lines.Text())
	}
	s.cpu = cpuTime() - cpu0
	s.rssAttach = rssKiB(b) - s.rss0
	s.dropped, _ = strconv.Atoi(f[4])
	cancel()
	return s
}

// countingManager counts the keepalives answered on the connections it
// attaches.
type countingManager struct {
	*slave.Manager
	keepalives *atomic.Int64
}

func (m countingManager) Attach(ctx context.Context, name string, c slave.Conn) error {
	return m.Manager.Attach(ctx, name, countingConn{c, m.keepalives})
}

type countingConn struct {
	slave.Conn
	keepalives *atomic.Int64
}

func (c countingConn) Keepalive(ctx context.Context) error {
	err := c.Conn.Keepalive(ctx)
	if err == nil {
		c.keepalives.Add(1)
	}
	return err
}

// report reports the figures of the storm and of the idle slaves it left.
func (s *stormRun) report(b *testing.B) {
	s.reportMemory(b)
	n := float64(s.n)
	b.ReportMetric(float64(runtime.NumGoroutine()-s.g0)/n, "goroutines/slave")
	b.ReportMetric(s.elapsed.Seconds(), "s-to-attach-all")
	b.ReportMetric(float64(s.dropped), "dropped")
	b.ReportMetric(float64(s.rssAttach)/n, "rss-at-attach-KiB/slave")
	b.ReportMetric(float64(s.cpu.Microseconds())/n, "cpu-µs/attach")
}

// reportMemory reports the heap, goroutine stacks and RSS per slave now,
// after a GC that returns free memory to the OS.
func (s *stormRun) reportMemory(b *testing.B) {
	var after runtime.MemStats
	runtime.GC()
	debug.FreeOSMemory()
	runtime.ReadMemStats(&after)
	n := float64(s.n)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(s.before.HeapAlloc))/n, "heap-B/slave")
	b.ReportMetric(float64(int64(after.StackInuse)-int64(s.before.StackInuse))/n, "stack-B/slave")
	b.ReportMetric(float64(rssKiB(b)-s.rss0)/n, "rss-KiB/slave")
}

// rssKiB is this process's resident set (VmRSS).
func rssKiB(b *testing.B) int {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status:", err)
	}
	for l := range strings.Lines(string(s)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

// cpuTime is this process's user and system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCommandRoundTrip runs `true` as a shell command on an attached
// in-process slave over loopback: Start, the rc update, completion.
func BenchmarkCommandRoundTrip(b *testing.B) {
	ms := newMaster(b, func(h *Handler) { h.Logger = slog.New(slog.DiscardHandler) })
	_, c := ms.attach(b, "s1")
	req := remote.Request{Name: "shell", Args: map[string]any{"command": "true", "workdir": "/w"}}
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		cmd, err := c.Start(b.Context(), req)
		if err != nil {
			b.Fatal(err)
		}
		for range cmd.Updates() {
		}
		if err := cmd.Wait(b.Context()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
