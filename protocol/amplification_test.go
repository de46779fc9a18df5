package protocol

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/testlog"
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

// attack sends frame from every slave at once and waits until the master
// has dropped them all and logged why. It returns the peak growth of the
// heap's objects over the run (sampled every millisecond) and the bytes
// allocated.
func (r *worstFrameRun) attack(t testing.TB, frame []byte) (peak, allocated uint64) {
	t.Helper()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
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
			peak = max(peak, sample[0].Value.Uint64()-min(base, sample[0].Value.Uint64()))
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
	return peak, after.TotalAlloc - before.TotalAlloc
}

// TestWorstFramesFromManySlaves: hostileSlaves authenticated slaves each
// send a worst frame at once; the master drops each with one log line
// naming the bound, and its heap grows by no more than the frames and
// their decoding budgets (the decoder without bounds took it to +3.9 GB).
func TestWorstFramesFromManySlaves(t *testing.T) {
	for name, frame := range worstFrames {
		t.Run(name, func(t *testing.T) {
			r := newWorstFrameRun(t)
			peak, allocated := r.attack(t, frame)
			t.Logf("%d slaves × %d-byte frame: heap peak +%.1f MB, %.1f MB allocated", hostileSlaves, len(frame), float64(peak)/1e6, float64(allocated)/1e6)
			// Each connection holds its frame (read into a buffer grown by
			// doubling) and at most the decoding budget.
			perSlave := uint64(3*len(frame) + wire.DefaultAllocFactor*len(frame) + wire.DefaultAllocBase)
			if bound := hostileSlaves*perSlave + 16<<20; peak > bound {
				t.Errorf("heap grew by %d bytes, over %d", peak, bound)
			}
			lines := r.logs.Matching("slave sent bad input; connection dropped", "DecodeLimits")
			if len(lines) != hostileSlaves {
				t.Errorf("%d log lines about the bad frame, want %d:\n%s", len(lines), hostileSlaves, r.logs)
			}
		})
	}
}

// BenchmarkWorstFrames reports the master's peak heap growth while
// hostileSlaves authenticated slaves each send a worst frame at once.
func BenchmarkWorstFrames(b *testing.B) {
	for name, frame := range worstFrames {
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			var peak, allocated uint64
			for b.Loop() {
				b.StopTimer()
				r := newWorstFrameRun(b)
				b.StartTimer()
				p, a := r.attack(b, frame)
				peak, allocated = max(peak, p), max(allocated, a)
			}
			b.ReportMetric(float64(peak)/1e6, "peak-heap-MB")
			b.ReportMetric(float64(allocated)/1e6, "alloc-MB")
		})
	}
}
