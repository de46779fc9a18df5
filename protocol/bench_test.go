package protocol

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
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

// BenchmarkAttachStorm dials N slaves at once at one master and reports
// the time until the manager has attached them all, and the master's heap
// and goroutine stack per idle attached slave. The slaves run in a child
// process (internal/loadslave, the bench's load generator), so the memory figures are the master's
// alone and the two ends' sockets do not share one file limit.
func BenchmarkAttachStorm(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("slaves=%d", n), func(b *testing.B) {
			bin, err := stormBinary()
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				storm(b, bin, n)
			}
		})
	}
}

func storm(b *testing.B, bin string, n int) {
	log := slog.New(slog.DiscardHandler)
	slaves := make([]*slave.Slave, n)
	for i := range slaves {
		s, err := slave.New(fmt.Sprintf("s%d", i), "pw")
		if err != nil {
			b.Fatal(err)
		}
		slaves[i] = s
	}
	m, err := slave.NewManager(slave.Config{Logger: log}, slaves...)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	h := &Handler{Manager: m, Builders: []string{"b1"}, Logger: log}
	// All n dial at once from one address: let them past the caps on
	// connections before login.
	addr := startServer(b, &Server{Handler: h, Limiter: &connlimit.Limiter{MaxPending: n, MaxPendingPerIP: n}})

	child := exec.Command(bin, "-url", "ws://"+addr.String()+"/", "-n", fmt.Sprint(n))
	child.Env = append(os.Environ(), "LOADSLAVE_PASSWORD=pw")
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer child.Wait()
	defer stdin.Close()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		b.Fatalf("storm client: %q", lines.Text())
	}

	events, cancel := m.Subscribe()
	defer cancel()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	io.WriteString(stdin, "go\n")
	for attached := 0; attached < n; {
		if ev := <-events; ev.Kind == slave.Attached {
			attached++
		}
	}
	elapsed := time.Since(start)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), fmt.Sprintf("attached %d %d ", n, n)) { // every slave got its final print
		b.Fatalf("storm client: %q", lines.Text())
	}
	cancel()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(elapsed.Seconds(), "s-to-attach-all")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/slave")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/float64(n), "stack-B/slave")
	b.ReportMetric(float64(after.NumGC-before.NumGC), "GCs")
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
