package protocol

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// hostileSlaves is how many authenticated slaves send their worst frame at
// once.
const hostileSlaves = 20

// worstFrames are 2 MiB frames that cost a naive decoder the most memory:
// one refused at its first header (a naive decoder took ~270 MB for it),
// one that spends the whole decoding budget before it is refused.
var worstFrames = map[string][]byte{
	"empty maps":      arrayFrame([]byte{0x80}),
	"maps, long keys": arrayFrame(append(append([]byte{0x81, 0xa0 | 30}, strings.Repeat("k", 30)...), 0xc0)),
}

// arrayFrame is a frame of wire.DefaultMaxMessageSize bytes at most: an
// array whose elements are all elem.
func arrayFrame(elem []byte) []byte {
	n := (wire.DefaultMaxMessageSize - 5) / len(elem)
	p := binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n))
	return append(p, bytes.Repeat(elem, n)...)
}

// worstFrameRun is one attack: a master with hostileSlaves attached fake
// slaves, each of which sends frame at once.
type worstFrameRun struct {
	logs   *testlog.Buffer
	h      *Handler
	slaves []*fakeSlave
}

func newWorstFrameRun(t testing.TB) *worstFrameRun {
	t.Helper()
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	var slaves []*slave.Slave
	for i := range hostileSlaves {
		s, err := slave.New(fmt.Sprintf("h%d", i), "pw")
		if err != nil {
			t.Fatal(err)
		}
		slaves = append(slaves, s)
	}
	m, err := slave.NewManager(slave.Config{Logger: log}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Manager: m, Builders: []string{"b1"}, Logger: log}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
		m.Close()
	})
	events, cancel := m.Subscribe()
	defer cancel()
	r := &worstFrameRun{logs: logs, h: h}
	for _, s := range slaves {
		d := &wire.Dialer{}
		tr, err := d.Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http"), s.Name(), "pw")
		if err != nil {
			t.Fatal(err)
		}
		r.slaves = append(r.slaves, newFakeSlave(t, tr))
	}
	deadline := time.After(30 * time.Second)
	for attached := 0; attached < hostileSlaves; {
		select {
		case ev := <-events:
			if ev.Kind == slave.Attached {
				attached++
			}
		case <-deadline:
			t.Fatalf("%d of %d slaves attached", attached, hostileSlaves)
		}
	}
	return r
}

// attackCost is what an attack cost the test process, in bytes.
type attackCost struct {
	heap      uint64 // peak growth of the heap's objects, sampled every millisecond
	rss       uint64 // peak growth of the resident size; 0 where Linux's /proc is missing
	allocated uint64
}

// procStatus reads a field of /proc/self/status, in bytes.
func procStatus(field string) (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// attack sends frame from every slave at once and waits until the master
// has dropped them all and logged why.
func (r *worstFrameRun) attack(t testing.TB, frame []byte) attackCost {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	rss, rssOK := procStatus("VmRSS")
	// Writing 5 resets the peak resident size, VmHWM.
	rssOK = rssOK && os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var cost attackCost
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			cost.heap = max(cost.heap, sample[0].Value.Uint64()-min(base, sample[0].Value.Uint64()))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})

	start := make(chan struct{})
	var senders sync.WaitGroup
	for _, s := range r.slaves {
		senders.Go(func() {
			<-start
			s.tr.WriteMessage(frame) // fails if the master already dropped us
		})
	}
	close(start)
	senders.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range r.slaves {
		select {
		case <-s.ctx.Done():
		case <-ctx.Done():
			t.Fatal("the master did not drop a slave that sent a bad frame")
		}
	}
	if err := r.h.Shutdown(ctx); err != nil { // waits until every connection has logged
		t.Fatal(err)
	}
	close(stop)
	sampler.Wait()
	runtime.ReadMemStats(&after)
	cost.allocated = after.TotalAlloc - before.TotalAlloc
	if hwm, ok := procStatus("VmHWM"); ok && rssOK {
		cost.rss = hwm - min(rss, hwm)
	}
	return cost
}

// TestWorstFramesFromManySlaves: hostileSlaves authenticated slaves each
// send a worst frame at once; the master drops each with one log line
// naming the bound, and its heap grows by a small multiple of the memory
// budget its connections share (about twice: garbage awaits the
// collector; a wide margin here, for -race and a loaded machine) and what
// each may read before reserving (the decoder without bounds took it to
// +3.9 GB, with bounds per connection only to +274 MB).
func TestWorstFramesFromManySlaves(t *testing.T) {
	for name, frame := range worstFrames {
		t.Run(name, func(t *testing.T) {
			r := newWorstFrameRun(t)
			cost := r.attack(t, frame)
			t.Logf("%d slaves × %d-byte frame: heap peak +%.1f MB, resident peak +%.1f MB, %.1f MB allocated",
				hostileSlaves, len(frame), float64(cost.heap)/1e6, float64(cost.rss)/1e6, float64(cost.allocated)/1e6)
			// Each connection may read 512 KiB of its frame (into a buffer
			// grown by doubling) before it reserves.
			perSlave := uint64(3 * wire.DefaultMaxMessageSize / 4)
			if bound := 4*budget.DefaultSize + hostileSlaves*perSlave + 16<<20; cost.heap > bound {
				t.Errorf("heap grew by %d bytes, over %d", cost.heap, bound)
			}
			// Each names the bound: DecodeLimits, or the budget's share.
			lines := slices.DeleteFunc(r.logs.Matching("slave sent bad input; connection dropped"), func(l string) bool {
				return !strings.Contains(l, "DecodeLimits") && !strings.Contains(l, "wire.WebSocketConfig.Budget")
			})
			if len(lines) != hostileSlaves {
				t.Errorf("%d log lines about the bad frame, want %d:\n%s", len(lines), hostileSlaves, r.logs)
			}
		})
	}
}

// BenchmarkWorstFrames reports the growth of the master's heap and
// resident size at their peak while hostileSlaves authenticated slaves each
// send a worst frame at once (the slaves run in the same process, but cost
// little: they share one encoded frame).
func BenchmarkWorstFrames(b *testing.B) {
	for name, frame := range worstFrames {
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			var worst attackCost
			for b.Loop() {
				b.StopTimer()
				r := newWorstFrameRun(b)
				b.StartTimer()
				cost := r.attack(b, frame)
				worst = attackCost{max(worst.heap, cost.heap), max(worst.rss, cost.rss), max(worst.allocated, cost.allocated)}
			}
			b.ReportMetric(float64(worst.heap)/1e6, "peak-heap-MB")
			b.ReportMetric(float64(worst.rss)/1e6, "peak-RSS-MB")
			b.ReportMetric(float64(worst.allocated)/1e6, "alloc-MB")
		})
	}
}
