package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// ErrMalformed is matched (with errors.Is) by every error that means the
// peer sent bytes or values this package cannot accept: invalid msgpack,
// wrong field types, requests out of order.
var ErrMalformed = errors.New("malformed message")

// maxDepth bounds the nesting of arrays and maps in one message. The deepest
// Buildbot message (an update carrying a log chunk) nests five levels.
const maxDepth = 32

// AppendValue appends the msgpack encoding of v to b. It accepts nil, bool,
// the integer and float types, string (encoded as str), []byte (bin),
// []any, []string, []int64, []float64, map[string]any, map[string]string
// and Message, nested freely.
func AppendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, 0xc0), nil
	case bool:
		if v {
			return append(b, 0xc3), nil
		}
		return append(b, 0xc2), nil
	case int:
		return appendInt(b, int64(v)), nil
	case int8:
		return appendInt(b, int64(v)), nil
	case int16:
		return appendInt(b, int64(v)), nil
	case int32:
		return appendInt(b, int64(v)), nil
	case int64:
		return appendInt(b, v), nil
	case uint:
		return appendUint(b, uint64(v)), nil
	case uint8:
		return appendUint(b, uint64(v)), nil
	case uint16:
		return appendUint(b, uint64(v)), nil
	case uint32:
		return appendUint(b, uint64(v)), nil
	case uint64:
		return appendUint(b, v), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(b, 0xca), math.Float32bits(v)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(v)), nil
	case string:
		return append(appendStrHeader(b, len(v)), v...), nil
	case []byte:
		return append(appendBinHeader(b, len(v)), v...), nil
	case []any:
		return appendList(b, v)
	case []string:
		return appendList(b, v)
	case []int64:
		return appendList(b, v)
	case []float64:
		return appendList(b, v)
	case map[string]any:
		return appendMap(b, v)
	case map[string]string:
		return appendMap(b, v)
	case Message:
		return appendMap(b, v)
	default:
		return b, fmt.Errorf("wire: cannot encode %T", v)
	}
}

func appendList[T any](b []byte, l []T) ([]byte, error) {
	b = appendArrayHeader(b, len(l))
	var err error
	for _, e := range l {
		if b, err = AppendValue(b, e); err != nil {
			return b, err
		}
	}
	return b, nil
}

func appendMap[M ~map[string]V, V any](b []byte, m M) ([]byte, error) {
	b = appendMapHeader(b, len(m))
	var err error
	for k, v := range m {
		b = append(appendStrHeader(b, len(k)), k...)
		if b, err = AppendValue(b, v); err != nil {
			return b, err
		}
	}
	return b, nil
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(b, uint64(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	}
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

// appendHeader appends a length header: the fix form (fix|n) when n < fixMax,
// else the 8-, 16- or 32-bit form whose type bytes are t8 (0 if none), t16, t32.
func appendHeader(b []byte, n int, fix byte, fixMax int, t8, t16, t32 byte) []byte {
	switch {
	case n < fixMax:
		return append(b, fix|byte(n))
	case t8 != 0 && n <= math.MaxUint8:
		return append(b, t8, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, t16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, t32), uint32(n))
	}
}

func appendStrHeader(b []byte, n int) []byte   { return appendHeader(b, n, 0xa0, 32, 0xd9, 0xda, 0xdb) }
func appendBinHeader(b []byte, n int) []byte   { return appendHeader(b, n, 0xc4, 0, 0xc4, 0xc5, 0xc6) }
func appendArrayHeader(b []byte, n int) []byte { return appendHeader(b, n, 0x90, 16, 0, 0xdc, 0xdd) }
func appendMapHeader(b []byte, n int) []byte   { return appendHeader(b, n, 0x80, 16, 0, 0xde, 0xdf) }

// DecodeValue decodes the single msgpack value that makes up all of p.
// Values come back as nil, bool, int64 (uint64 only above math.MaxInt64),
// float64, string (from str, which must be valid UTF-8), []byte (from bin,
// copied), []any and map[string]any. Extension types, maps with non-string
// keys, nesting deeper than 32 levels and trailing bytes are errors
// matching ErrMalformed.
func DecodeValue(p []byte) (any, error) {
	d := decoder{p: p}
	v, err := d.value(0)
	if err == nil && d.off != len(p) {
		err = d.errorf("%d trailing bytes", len(p)-d.off)
	}
	return v, err
}

type decoder struct {
	p   []byte
	off int
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: msgpack at byte %d: %s", ErrMalformed, d.off, fmt.Sprintf(format, args...))
}

// take returns the next n bytes.
func (d *decoder) take(n uint64) ([]byte, error) {
	if n > uint64(len(d.p)-d.off) {
		return nil, d.errorf("truncated")
	}
	b := d.p[d.off : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

// uint reads a big-endian unsigned integer of size bytes.
func (d *decoder) uint(size int) (uint64, error) {
	b, err := d.take(uint64(size))
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

func (d *decoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, d.errorf("nested deeper than %d", maxDepth)
	}
	tb, err := d.take(1)
	if err != nil {
		return nil, err
	}
	t := tb[0]
	switch {
	case t <= 0x7f:
		return int64(t), nil
	case t >= 0xe0:
		return int64(int8(t)), nil
	case t&0xf0 == 0x80:
		return d.mapBody(uint64(t&0x0f), depth)
	case t&0xf0 == 0x90:
		return d.arrayBody(uint64(t&0x0f), depth)
	case t&0xe0 == 0xa0:
		return d.str(uint64(t & 0x1f))
	}
	switch t {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xc4, 0xc5, 0xc6:
		n, err := d.uint(1 << (t - 0xc4))
		if err != nil {
			return nil, err
		}
		b, err := d.take(n)
		if err != nil {
			return nil, err
		}
		return append([]byte{}, b...), nil
	case 0xca:
		v, err := d.uint(4)
		return float64(math.Float32frombits(uint32(v))), err
	case 0xcb:
		v, err := d.uint(8)
		return math.Float64frombits(v), err
	case 0xcc, 0xcd, 0xce, 0xcf:
		v, err := d.uint(1 << (t - 0xcc))
		if v > math.MaxInt64 {
			return v, err
		}
		return int64(v), err
	case 0xd0, 0xd1, 0xd2, 0xd3:
		size := 1 << (t - 0xd0)
		v, err := d.uint(size)
		shift := 64 - 8*size // sign-extend
		return int64(v<<shift) >> shift, err
	case 0xd9, 0xda, 0xdb:
		n, err := d.uint(1 << (t - 0xd9))
		if err != nil {
			return nil, err
		}
		return d.str(n)
	case 0xdc, 0xdd:
		n, err := d.uint(2 << (t - 0xdc))
		if err != nil {
			return nil, err
		}
		return d.arrayBody(n, depth)
	case 0xde, 0xdf:
		n, err := d.uint(2 << (t - 0xde))
		if err != nil {
			return nil, err
		}
		return d.mapBody(n, depth)
	}
	d.off--
	return nil, d.errorf("unsupported type byte 0x%02x", t)
}

func (d *decoder) str(n uint64) (any, error) {
	b, err := d.take(n)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(b) {
		return nil, d.errorf("str is not valid UTF-8")
	}
	return string(b), nil
}

func (d *decoder) arrayBody(n uint64, depth int) (any, error) {
	// Every element takes at least one byte: refuse counts the input cannot hold.
	if n > uint64(len(d.p)-d.off) {
		return nil, d.errorf("array of %d elements is truncated", n)
	}
	// Grow as elements arrive, so memory follows the bytes actually read.
	l := make([]any, 0, min(n, 16))
	for range n {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		l = append(l, v)
	}
	return l, nil
}

func (d *decoder) mapBody(n uint64, depth int) (any, error) {
	if n > uint64(len(d.p)-d.off)/2 {
		return nil, d.errorf("map of %d entries is truncated", n)
	}
	m := make(map[string]any, min(n, 16))
	for range n {
		k, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		ks, ok := k.(string)
		if !ok {
			return nil, d.errorf("map key is %s, want str", typeName(k))
		}
		if m[ks], err = d.value(depth + 1); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// typeName names the msgpack type of a decoded value, for error messages.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case bool:
		return "bool"
	case int64, uint64:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bin"
	case []any:
		return "array"
	case map[string]any:
		return "map"
	default:
		return fmt.Sprintf("%T", v)
	}
}
