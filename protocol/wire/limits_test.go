package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
)

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) int {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return int(after.TotalAlloc - before.TotalAlloc)
}

// arrayOf returns an array32 frame of size bytes at most, whose elements
// are all elem.
func arrayOf(size int, elem []byte) []byte {
	n := (size - 5) / len(elem)
	p := binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n))
	return append(p, bytes.Repeat(elem, n)...)
}

// WorstFrames are frames of DefaultMaxMessageSize that cost a naive decoder
// the most memory per byte received; the last two hit the memory bound
// rather than the count of values.
func WorstFrames() map[string][]byte {
	size := DefaultMaxMessageSize
	longKey := append(append([]byte{0x81, 0xa0 | 30}, strings.Repeat("k", 30)...), 0xc0)
	binMap := append([]byte{0x81, 0xa1, 'k', 0xc4, 40}, make([]byte, 40)...)
	return map[string][]byte{
		"empty maps":      arrayOf(size, []byte{0x80}),
		"empty arrays":    arrayOf(size, []byte{0x90}),
		"tiny strs":       arrayOf(size, []byte{0xa1, 'x'}),
		"one-entry maps":  arrayOf(size, []byte{0x81, 0xa1, 'k', 0xc0}),
		"boxed ints":      arrayOf(size, []byte{0xcd, 0x12, 0x34}),
		"nils":            arrayOf(size, []byte{0xc0}),
		"short arrays":    arrayOf(size, []byte{0x93, 0xc0, 0xc0, 0xc0}),
		"maps, long keys": arrayOf(size, longKey),
		"maps of a bin":   arrayOf(size, binMap),
	}
}

// TestDecodeWorstFramesStayInBudget decodes the frames that allocate the
// most per byte: each is refused, having allocated no more than the budget
// (a naive decoder allocated 60–270 MB for each).
func TestDecodeWorstFramesStayInBudget(t *testing.T) {
	for name, p := range WorstFrames() {
		var err error
		got := allocated(func() { _, err = DecodeValue(p) })
		budget := DefaultAllocFactor*len(p) + DefaultAllocBase
		t.Logf("%s: %d-byte frame, %d bytes allocated (budget %d): %v", name, len(p), got, budget, err)
		if got > budget {
			t.Errorf("%s: decoding a %d-byte frame allocated %d bytes, over the budget of %d", name, len(p), got, budget)
		}
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "DecodeLimits") {
			t.Errorf("%s: err = %v, want ErrMalformed naming a DecodeLimits bound", name, err)
		}
	}
	for _, name := range []string{"maps, long keys", "maps of a bin"} {
		if _, err := DecodeValue(WorstFrames()[name]); err == nil || !strings.Contains(err.Error(), "AllocFactor") {
			t.Errorf("%s: err = %v, want the memory bound", name, err)
		}
	}
}

// charged returns the bytes the decoder charges for p under generous
// limits.
func charged(t *testing.T, p []byte) int {
	t.Helper()
	const budget = 1 << 40
	d := decoder{p: p, lim: DecodeLimits{MaxValues: 1 << 30}, values: 1 << 30, mem: budget}
	if _, err := d.value(0); err != nil {
		t.Fatal(err)
	}
	return budget - d.mem
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	p, err := AppendValue(nil, v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDecodeChargesCoverAllocations checks that what the decoder charges
// for a value is at least what decoding it allocates, for every kind of
// value and sizes across the runtime's size classes and map layouts.
func TestDecodeChargesCoverAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the charges model the runtime without the race detector, which allocates small values in 16-byte blocks")
	}
	values := map[string]any{}
	mapOf := func(n int) map[string]any {
		m := map[string]any{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = nil
		}
		return m
	}
	for _, n := range []int{0, 1, 2, 7, 8, 9, 14, 15, 16, 17, 28, 29, 56, 57, 100, 500, 896, 897, 1000, 5000, 20000} {
		values[fmt.Sprintf("map of %d", n)] = mapOf(n)
		values[fmt.Sprintf("array of %d", n)] = make([]any, n)
		values[fmt.Sprintf("str of %d", n)] = strings.Repeat("x", n)
		values[fmt.Sprintf("bin of %d", n)] = make([]byte, n)
	}
	for _, n := range []int{3, 5, 31, 32, 33, 127, 128, 129, 255, 256, 1 << 15, 1<<15 + 1, 100000} {
		values[fmt.Sprintf("str of %d", n)] = strings.Repeat("x", n)
		values[fmt.Sprintf("bin of %d", n)] = make([]byte, n)
	}
	ints, floats, small := make([]any, 1000), make([]any, 1000), make([]any, 1000)
	for i := range ints {
		ints[i], floats[i], small[i] = int64(-1000*i), float64(i)+0.5, int64(i%128)
	}
	values["ints"], values["floats"], values["small ints"] = ints, floats, small
	values["nested"] = map[string]any{"a": []any{map[string]any{"b": []any{"c", int64(300), 1.5, []byte("d")}}}}
	for name, v := range values {
		p := encode(t, v)
		want := charged(t, p)
		// The least of three measurements: another goroutine may allocate.
		const runs = 50
		generous := DecodeLimits{MaxValues: 1 << 30, AllocFactor: 1 << 10}
		got := math.MaxInt
		for range 3 {
			got = min(got, allocated(func() {
				for range runs {
					if _, err := generous.DecodeValue(p); err != nil {
						t.Fatal(err)
					}
				}
			})/runs)
		}
		if got > want {
			t.Errorf("%s: decoding allocates %d bytes, the decoder charges %d", name, got, want)
		}
	}
}

// TestDecodeLimits hits each configured bound exactly.
func TestDecodeLimits(t *testing.T) {
	three := encode(t, []any{nil, "a"})               // three values
	twoEntries := encode(t, map[string]any{"a": nil}) // three values: the map, a key, a value
	for _, p := range [][]byte{three, twoEntries} {
		if _, err := (DecodeLimits{MaxValues: 3}).DecodeValue(p); err != nil {
			t.Errorf("%x with MaxValues 3: %v", p, err)
		}
		_, err := DecodeLimits{MaxValues: 2}.DecodeValue(p)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than 2 values (DecodeLimits.MaxValues)") {
			t.Errorf("%x with MaxValues 2: err = %v", p, err)
		}
	}
	p := encode(t, map[string]any{"a": []any{"xyz", make([]byte, 100), 1.5, int64(-5)}, "b": map[string]any{}})
	cost := charged(t, p)
	exact := DecodeLimits{AllocFactor: 1, AllocBase: cost - len(p)}
	if _, err := exact.DecodeValue(p); err != nil {
		t.Errorf("with a budget of exactly %d bytes: %v", cost, err)
	}
	exact.AllocBase--
	_, err := exact.DecodeValue(p)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), fmt.Sprintf("more than %d bytes of memory (DecodeLimits: AllocFactor 1 × %d bytes + AllocBase %d)", cost-1, len(p), cost-1-len(p))) {
		t.Errorf("with a budget of %d bytes: err = %v", cost-1, err)
	}
	if _, err := (DecodeLimits{MaxValues: 6}).DecodeMessage(encode(t, map[string]any{"op": "x", "seq_number": 1, "a": nil})); err == nil {
		t.Error("DecodeLimits.DecodeMessage ignored MaxValues")
	}
}

// TestDecodeTypicalFramesFit decodes the most expensive legitimate frames
// under the default limits: output batches of empty lines (the most lines a
// batch can hold, from this package's slave and from a stock one, which
// counts only the text against buffer_size) and the listing of a directory
// of 100,000 numbered files.
func TestDecodeTypicalFramesFit(t *testing.T) {
	batch := func(lines int) []any {
		offsets, times := make([]any, lines), make([]any, lines)
		for i := range lines {
			offsets[i], times[i] = int64(i), 1.7e9+float64(i)/1000
		}
		return []any{[]any{"stdout", []any{strings.Repeat("\n", lines), offsets, times}}}
	}
	names := make([]any, 100000)
	for i := range names {
		names[i] = fmt.Sprint(i + 1)
	}
	for name, args := range map[string]any{
		"our slave's batch":   batch(64 << 10 / 17),
		"stock slave's batch": batch(64 << 10),
		"listdir":             []any{[]any{"files", names}},
	} {
		p := encode(t, map[string]any{"op": "update", "seq_number": 1, "command_id": "1", "args": args})
		if _, err := DecodeMessage(p); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		t.Logf("%s: %d bytes, %.1f bytes of memory per byte", name, len(p), float64(charged(t, p))/float64(len(p)))
	}
}

// TestConnRefusesCostlyFrames: a Conn ends with the bound in its cause,
// with the defaults over a pipe and with WebSocketConfig.Decode over a
// WebSocket.
func TestConnRefusesCostlyFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := Pipe()
		wait := serve(NewConn(a, echoHandler))
		if err := b.WriteMessage(WorstFrames()["empty maps"]); err != nil {
			t.Fatal(err)
		}
		if err := wait(); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "DecodeLimits.MaxValues") {
			t.Errorf("Serve = %v, want the bound on values", err)
		}
	})

	c, _, served := dialServed(t, &Upgrader{WebSocketConfig{Decode: DecodeLimits{MaxValues: 20}}}, echoHandler)
	if _, err := c.Call(t.Context(), "echo", map[string]any{"value": make([]any, 5)}); err != nil {
		t.Fatalf("call within the bound: %v", err)
	}
	c.Call(t.Context(), "echo", map[string]any{"value": make([]any, 20)})
	if err := <-served; !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than 20 values") {
		t.Errorf("server's Serve = %v, want the bound on values", err)
	}
}
