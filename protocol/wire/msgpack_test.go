package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/protocol/internal/capture"
)

func TestRoundTrip(t *testing.T) {
	values := []any{
		nil, true, false, int64(0), int64(127), int64(128), int64(-1), int64(-32), int64(-33),
		int64(math.MinInt8), int64(math.MinInt16), int64(math.MinInt32), int64(math.MinInt64),
		int64(math.MaxUint8), int64(math.MaxUint16), int64(math.MaxUint32), int64(math.MaxInt64),
		uint64(math.MaxUint64), 1.5, "", "hé", strings.Repeat("x", 31), strings.Repeat("x", 32),
		strings.Repeat("x", 256), strings.Repeat("x", 70000), []byte{}, []byte{0, 1, 2},
		bytes.Repeat([]byte{7}, 300), bytes.Repeat([]byte{7}, 70000), []any{}, []any{int64(1), "a", nil},
		make([]any, 20), map[string]any{}, map[string]any{"a": []any{map[string]any{"b": []byte("c")}}},
	}
	for _, v := range values {
		b, err := AppendValue(nil, v)
		if err != nil {
			t.Fatalf("AppendValue(%T): %v", v, err)
		}
		got, err := DecodeValue(b)
		if err != nil {
			t.Fatalf("DecodeValue(AppendValue(%T)): %v", v, err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Errorf("round trip of %#v gave %#v", v, got)
		}
	}
}

// TestCaptureSizes checks the encoding byte for byte in size against the
// frames stock Buildbot 3.7 sent (str for text, the shortest integer forms).
// Messages carrying paths are left out: the capture's paths were renamed.
func TestCaptureSizes(t *testing.T) {
	want := map[int]int{0: 39, 1: 33, 2: 32, 4: 168, 5: 33, 7: 129, 8: 44, 11: 65, 12: 35, 16: 26}
	msgs := capture.Messages()
	for i, n := range want {
		m := msgs[i]
		b, err := AppendValue(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != n {
			t.Errorf("message %d (%v) encodes to %d bytes, the capture has %d", i, m["op"], len(b), n)
		}
	}
}

func TestEncodeTypes(t *testing.T) {
	b, err := AppendValue(nil, map[string]any{"s": []string{"a"}, "i": []int64{1}, "f": []float64{2},
		"m": map[string]string{"k": "v"}, "n": []any{int8(-1), int16(2), int32(3), uint(4), uint8(5), uint16(6), uint32(7), float32(0.5), 8}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeValue(b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"s": []any{"a"}, "i": []any{int64(1)}, "f": []any{2.0}, "m": map[string]any{"k": "v"},
		"n": []any{int64(-1), int64(2), int64(3), int64(4), int64(5), int64(6), int64(7), 0.5, int64(8)}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v", got)
	}
	if _, err := AppendValue(nil, struct{}{}); err == nil {
		t.Error("encoding a struct succeeded")
	}
}

func TestDecodeErrors(t *testing.T) {
	for name, p := range map[string][]byte{
		"empty":          {},
		"trailing":       {0xc0, 0xc0},
		"truncated str":  {0xa3, 'a'},
		"truncated int":  {0xcd, 1},
		"bad utf8":       {0xa1, 0xff},
		"ext":            {0xd4, 1, 1},
		"never used":     {0xc1},
		"int key":        {0x81, 0x01, 0xc0},
		"huge array":     {0xdd, 0xff, 0xff, 0xff, 0xff},
		"huge map":       {0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0},
		"huge bin":       {0xc6, 0xff, 0xff, 0xff, 0xff},
		"deep":           bytes.Repeat([]byte{0x91}, 100),
		"truncated elem": {0x92, 0xc0},
		"truncated key":  {0x82, 0xa1, 'a', 0xc4, 1, 'x'},
		"long int key":   {0x81, 0xcd, 1, 0, 0xc0},
	} {
		if _, err := DecodeValue(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestDecodeMessage(t *testing.T) {
	enc := func(v any) []byte {
		b, err := AppendValue(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	m, err := DecodeMessage(enc(map[string]any{"op": "print", "seq_number": 3, "message": "hi"}))
	if err != nil || m.Op() != "print" || m.Seq() != 3 {
		t.Fatalf("DecodeMessage = %v, %v", m, err)
	}
	for name, v := range map[string]any{
		"not a map":  []any{},
		"no op":      map[string]any{"seq_number": 1},
		"int op":     map[string]any{"op": 1, "seq_number": 1},
		"no seq":     map[string]any{"op": "print"},
		"str seq":    map[string]any{"op": "print", "seq_number": "1"},
		"negative":   map[string]any{"op": "print", "seq_number": -1},
		"float seq":  map[string]any{"op": "print", "seq_number": 1.0},
		"uint64 seq": map[string]any{"op": "print", "seq_number": uint64(math.MaxUint64)},
	} {
		if _, err := DecodeMessage(enc(v)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestFields(t *testing.T) {
	m := Message{"s": "str", "b": []byte("bin"), "i": int64(4), "f": 0.5, "t": true, "l": []any{}, "m": map[string]any{}, "nil": nil}
	if v, err := m.String("s"); v != "str" || err != nil {
		t.Errorf("String = %q, %v", v, err)
	}
	if v, err := m.Bytes("b"); string(v) != "bin" || err != nil {
		t.Errorf("Bytes = %q, %v", v, err)
	}
	if v, err := m.Bytes("s"); string(v) != "str" || err != nil {
		t.Errorf("Bytes(str) = %q, %v", v, err)
	}
	if v, err := m.Int("i"); v != 4 || err != nil {
		t.Errorf("Int = %d, %v", v, err)
	}
	if v, err := m.Float("i"); v != 4 || err != nil {
		t.Errorf("Float(int) = %v, %v", v, err)
	}
	if v, err := m.Float("f"); v != 0.5 || err != nil {
		t.Errorf("Float = %v, %v", v, err)
	}
	if v, err := m.Bool("t"); !v || err != nil {
		t.Errorf("Bool = %v, %v", v, err)
	}
	if _, err := m.List("l"); err != nil {
		t.Error(err)
	}
	if _, err := m.Map("m"); err != nil {
		t.Error(err)
	}
	if !m.Has("nil") || m.Has("absent") {
		t.Error("Has is wrong")
	}
	_, err := m.Int("s")
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Key != "s" || fe.Want != "int" || fe.Got != "str" || !errors.Is(err, ErrMalformed) {
		t.Errorf("Int(str) error = %#v", err)
	}
	if err.Error() != `malformed message: field "s": want int, got str` {
		t.Errorf("error text = %q", err)
	}
	if _, err := m.String("absent"); err == nil || !strings.Contains(err.Error(), "got nothing") {
		t.Errorf("String(absent) error = %v", err)
	}
	if _, err := m.Float("s"); err == nil {
		t.Error("Float(str) succeeded")
	}
}

// FuzzDecodeMessage feeds arbitrary frames to the decoder: it must never
// panic, and whatever it accepts must encode and decode to the same value.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range capture.Messages() {
		b, err := AppendValue(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := DecodeMessage(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		b, err := AppendValue(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := DecodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%#v", m) != fmt.Sprintf("%#v", m2) { // %#v sorts keys and prints NaN alike
			t.Fatalf("re-encoding changed %v to %v", m, m2)
		}
	})
}
