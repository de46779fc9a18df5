package pb

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Memory amplification (issue 14, item 1): a peer that knows its password
// sends the message that is cheapest to send and most expensive to decode.
// The decoder must refuse it, or decode it within Limits.AllocFactor bytes
// of allocation per byte read plus 4 KiB.

// worstSize is the size of each worst message: about 1 MB, within
// DefaultMaxMessageBytes.
const worstSize = DefaultMaxMessageBytes - 64

// worstMessage builds a PB message of about size bytes: a call whose
// arguments are lists (as many as it takes, each within SizeLimit) of
// copies of elem, after prefix (an item of its own, if not nil). The message is valid banana and jelly.
func worstMessage(size int, prefix, elem []byte) []byte {
	n := (size - 64 - len(prefix)) / len(elem) // elements in all
	lists := (n + SizeLimit - 2) / (SizeLimit - 1)
	w := writer{vocab: true}
	items := 1 + lists
	if prefix != nil {
		items++
	}
	w.list(items)
	w.atom("message")
	w.b = append(w.b, prefix...)
	for i := range lists {
		k := min(n-i*(SizeLimit-1), SizeLimit-1)
		w.list(k + 1)
		w.atom("list")
		for range k {
			w.b = append(w.b, elem...)
		}
	}
	return w.b
}

// tokens returns the bytes of what build writes.
func tokens(build func(w *writer)) []byte {
	w := writer{vocab: true}
	build(&w)
	return w.b
}

// worstCase is one kind of worst message.
type worstCase struct {
	name string
	msg  []byte
}

// worstCases are the messages that make the decoder allocate the most per
// byte: empty containers, bare VOCAB tokens and empty strings (one byte
// each, and a boxed value), small integers in one byte, references, and
// dereferences of one large value many times.
func worstCases() []worstCase {
	emptyDict := tokens(func(w *writer) { w.list(1); w.atom("dictionary") })
	emptyList := tokens(func(w *writer) { w.list(1); w.atom("list") })
	emptyTuple := tokens(func(w *writer) { w.list(1); w.atom("tuple") })
	vocab := tokens(func(w *writer) { w.atom("None") })
	none := tokens(func(w *writer) { w.list(1); w.atom("None") })
	remote := tokens(func(w *writer) { w.list(2); w.atom("remote"); w.int(1) })
	boolean := tokens(func(w *writer) { w.list(2); w.atom("boolean"); w.atom("true") })
	unicode := tokens(func(w *writer) { w.list(2); w.atom("unicode"); w.number(0, tokString) })
	bigInt := tokens(func(w *writer) { w.int(1 << 40) })
	float := tokens(func(w *writer) { w.float(1.5) })
	deref := tokens(func(w *writer) { w.list(2); w.atom("dereference"); w.int(1) })
	// One list of 40,000 empty dictionaries, referenced as 1, then
	// dereferenced as often as fits.
	shared := tokens(func(w *writer) {
		w.list(3)
		w.atom("reference")
		w.int(1)
		w.list(40001)
		w.atom("list")
		for range 40000 {
			w.b = append(w.b, emptyDict...)
		}
	})
	// One list of 5,000 short unicode strings: cheap to decode for its
	// size, and each dereference of it costs a copy to Plain.
	sharedText := tokens(func(w *writer) {
		w.list(3)
		w.atom("reference")
		w.int(1)
		w.list(5001)
		w.atom("list")
		for range 5000 {
			w.list(2)
			w.atom("unicode")
			w.atom("abcdefgh")
		}
	})
	sharedTextInList := tokens(func(w *writer) {
		n := (worstSize - len(sharedText) - 64) / len(deref)
		w.list(2 + n)
		w.atom("list")
		w.b = append(w.b, sharedText...)
		for range n {
			w.b = append(w.b, deref...)
		}
	})
	sharedInList := tokens(func(w *writer) {
		w.list(2 + (worstSize-len(shared)-64)/len(deref))
		w.atom("list")
		w.b = append(w.b, shared...)
		for range (worstSize - len(shared) - 64) / len(deref) {
			w.b = append(w.b, deref...)
		}
	})
	msg := func(items ...[]byte) []byte {
		return tokens(func(w *writer) {
			w.list(1 + len(items))
			w.atom("message")
			for _, it := range items {
				w.b = append(w.b, it...)
			}
		})
	}
	// A dictionary with as many distinct two-byte keys as fit.
	dict := tokens(func(w *writer) {
		n := min((worstSize-64)/8, 65535)
		w.list(n + 1)
		w.atom("dictionary")
		for i := range n {
			w.list(2)
			w.bytes([]byte{byte(i >> 8), byte(i)})
			w.number(0, tokInt)
		}
	})
	return []worstCase{
		{"empty dictionaries", worstMessage(worstSize, nil, emptyDict)},
		{"empty lists", worstMessage(worstSize, nil, emptyList)},
		{"empty tuples", worstMessage(worstSize, nil, emptyTuple)},
		{"VOCAB tokens", worstMessage(worstSize, nil, vocab)},
		{"empty strings", worstMessage(worstSize, nil, []byte{tokString})},
		{"zeros", worstMessage(worstSize, nil, []byte{tokInt})},
		{"Nones", worstMessage(worstSize, nil, none)},
		{"booleans", worstMessage(worstSize, nil, boolean)},
		{"empty unicode", worstMessage(worstSize, nil, unicode)},
		{"large integers", worstMessage(worstSize, nil, bigInt)},
		{"floats", worstMessage(worstSize, nil, float)},
		{"remote references", worstMessage(worstSize, nil, remote)},
		{"a string, then VOCAB tokens", worstMessage(worstSize, tokens(func(w *writer) {
			w.number(400<<10, tokString)
			w.b = append(w.b, make([]byte, 400<<10)...)
		}), vocab)},
		{"dereferences of a shared list", msg(sharedInList)},
		{"dereferences of a shared list of text", msg(sharedTextInList)},
		{"distinct references", msg(tokens(func(w *writer) {
			n := (worstSize - 64) / 12
			w.list(n + 1)
			w.atom("list")
			for i := range n {
				w.list(3)
				w.atom("reference")
				w.int(int64(1000 + i))
				w.list(1)
				w.atom("None")
			}
		}))},
		{"a dictionary of 16-byte keys", msg(tokens(func(w *writer) {
			n := (worstSize - 64) / 22
			w.list(n + 1)
			w.atom("dictionary")
			for i := range n {
				w.list(2)
				w.bytes(fmt.Appendf(nil, "%016d", i))
				w.number(0, tokInt)
			}
		}))},
		{"strings of 64 KiB", worstMessage(worstSize, nil, tokens(func(w *writer) {
			w.number(64<<10-8, tokString)
			w.b = append(w.b, make([]byte, 64<<10-8)...)
		}))},
		{"a string of 640 KiB, then unicode", msg(tokens(func(w *writer) {
			w.number(SizeLimit, tokString)
			w.b = append(w.b, make([]byte, SizeLimit)...)
		}), tokens(func(w *writer) {
			w.list(2)
			w.atom("unicode")
			w.number(300<<10, tokString)
			w.b = append(w.b, bytes.Repeat([]byte("u"), 300<<10)...)
		}))},
		{"a dictionary of distinct keys", msg(dict)},
	}
}

// decodeAlloc decodes msg with a warmed-up decoder and returns the bytes
// allocated, the bytes read and the error, and then the bytes Plain
// allocates to copy the message (as the master copies a slave's info).
func decodeAlloc(msg []byte, lim Limits) (alloc uint64, read int, err error, plain uint64) {
	src := &bytes.Reader{}
	d := newGoldenDecoder(src, lim)
	warm := tokens(func(w *writer) { w.list(2); w.atom("version"); w.int(6) })
	src.Reset(warm)
	if _, err := d.message(); err != nil {
		panic(err)
	}
	src.Reset(msg)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m, err := d.message()
	runtime.ReadMemStats(&after)
	alloc, read = after.TotalAlloc-before.TotalAlloc, d.read
	if err == nil {
		runtime.ReadMemStats(&before)
		p := Plain([]any(m))
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(p)
		plain = after.TotalAlloc - before.TotalAlloc
	}
	return alloc, read, err, plain
}

// TestWorstMessagesWithinAllocationBudget decodes each worst message and
// checks that the decoder allocated at most AllocFactor bytes per byte it
// read, plus 4 KiB, plus a little for the error's text; and that a
// message it accepts costs Plain no more to copy.
func TestWorstMessagesWithinAllocationBudget(t *testing.T) {
	const errorText = 1 << 10
	lim := Limits{}.withDefaults()
	for _, c := range worstCases() {
		t.Run(c.name, func(t *testing.T) {
			// The counters are the process's: goroutines other tests left
			// behind (connections closing, timers firing) add to them, never
			// take away. So the least of up to 20 tries counts, and a try
			// within the budget ends the loop.
			var allocs, plains []uint64
			var read int
			var err error
			var budget uint64
			for range 20 {
				a, r, e, p := decodeAlloc(c.msg, lim)
				allocs, plains, read, err = append(allocs, a), append(plains, p), r, e
				budget = uint64(lim.AllocFactor*read + allocSlack + errorText)
				if a <= budget && p <= budget {
					break
				}
			}
			alloc, plain := slices.Min(allocs), slices.Min(plains)
			if err != nil && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("decode: %v", err)
			}
			outcome := "decoded"
			if err != nil {
				outcome = "refused"
			}
			t.Logf("%d-byte message %s after %d bytes: %d bytes allocated (%.1f per byte read), Plain %d, budget %d",
				len(c.msg), outcome, read, alloc, float64(alloc)/float64(max(read, 1)), plain, budget)
			if alloc > budget {
				t.Errorf("decoding allocated %d bytes for %d bytes read, over the budget of %d (AllocFactor %d)",
					alloc, read, budget, lim.AllocFactor)
			}
			if plain > budget {
				t.Errorf("copying the decoded message with Plain allocated %d bytes, over the budget of %d", plain, budget)
			}
		})
	}
}

// TestLargeRealMessagesDecode checks that the budget refuses none of the
// large messages real slaves send: a worker's info with a big environment
// of short and long variables, a glob's 5,000 files, a 256 KiB upload
// block, a log update of 64 KiB, a stat.
func TestLargeRealMessagesDecode(t *testing.T) {
	environ := map[string]any{}
	for i := range 300 {
		switch i % 3 {
		case 0:
			environ[fmt.Sprintf("V%d", i)] = "1"
		case 1:
			environ[fmt.Sprintf("SOME_TOOL_SETTING_%d", i)] = "/opt/tool/bin:/usr/local/bin:/usr/bin:/bin"
		default:
			environ[fmt.Sprintf("X%d", i)] = ""
		}
	}
	var files []any
	for i := range 5000 {
		files = append(files, fmt.Sprintf("/srv/bb/w/hello/build/dist/file-%05d.txt", i))
	}
	update := func(m map[string]any) []any {
		return []any{[]byte("message"), int64(40), int64(3), []byte("update"), int64(1),
			Tuple{[]any{[]any{m, int64(0)}}}, map[string]any{}}
	}
	for _, c := range []struct {
		name string
		msg  []any
	}{
		{"worker info", []any{[]byte("answer"), int64(2), map[string]any{"admin": "Someone <someone@example.com>\n",
			"host": "a build host\n", "environ": environ, "system": "posix", "basedir": "/srv/bb/w", "numcpus": 64,
			"version": "3.7.0-2", "delete_leftover_dirs": 0, "worker_commands": map[string]any{"shell": "3.3", "uploadFile": "3.3",
				"uploadDirectory": "3.3", "downloadFile": "3.3", "mkdir": "3.3", "rmdir": "3.3", "cpdir": "3.3", "stat": "3.3",
				"glob": "3.3", "listdir": "3.3", "rmfile": "3.3", "move": "3.3"}}}},
		{"glob", update(map[string]any{"files": files})},
		{"upload block", []any{[]byte("message"), int64(16), int64(7), []byte("write"), int64(1),
			Tuple{bytes.Repeat([]byte{0}, 256<<10)}, map[string]any{}}},
		{"log", update(map[string]any{"log": Tuple{"build.log", strings.Repeat("a line of the log\n", 64<<10/18)}})},
		{"stat", update(map[string]any{"stat": Tuple{33152, 745504, 65024, 1, 0, 0, 17, 1796285272, 1796285272, 1796285272}})},
		{"stdout", update(map[string]any{"stdout": strings.Repeat("x\n", 50)})},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := encodeMessage(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			alloc, read, err, _ := decodeAlloc(b, Limits{})
			if err != nil {
				t.Fatalf("a real %d-byte message refused: %v", len(b), err)
			}
			t.Logf("%d bytes: %d allocated, %.1f per byte", read, alloc, float64(alloc)/float64(read))
		})
	}
}

// heapObjects is the heap's bytes in objects, garbage not yet swept
// included.
func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkWorstMessagesAtOnce has 20 slaves, logged in and attached,
// send their worst 1 MB message at the same moment, and reports the
// master's peak heap above what it was before (peak-heap-MB) and the time
// until every one of them was dropped.
func BenchmarkWorstMessagesAtOnce(b *testing.B) {
	const peers = 20
	var names []string
	for i := range peers {
		names = append(names, fmt.Sprintf("w%d", i))
	}
	for _, c := range worstCases() {
		b.Run(strings.ReplaceAll(c.name, " ", "_"), func(b *testing.B) {
			tm := newTestMasterOf(b, names, nil)
			var peak uint64
			b.StopTimer()
			for range b.N {
				var ps []*rawPeer
				for _, name := range names {
					p := tm.dialRaw()
					p.attach(name)
					ps = append(ps, p)
				}
				runtime.GC()
				base := heapObjects()
				stop := make(chan struct{})
				sampled := make(chan uint64)
				go func() {
					high := base
					for {
						high = max(high, heapObjects())
						select {
						case <-stop:
							sampled <- high - base
							return
						default:
							time.Sleep(100 * time.Microsecond)
						}
					}
				}()
				b.StartTimer()
				var wg sync.WaitGroup
				for _, p := range ps {
					wg.Go(func() {
						p.write(c.msg)
						p.closed()
					})
				}
				wg.Wait()
				b.StopTimer()
				close(stop)
				peak = max(peak, <-sampled)
			}
			b.ReportMetric(float64(peak)/1e6, "peak-heap-MB")
		})
	}
}
