package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
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

// Defaults for the zero fields of DecodeLimits.
const (
	// DefaultMaxValues is the default bound on the values in one message:
	// a batch of 64 KiB of output holds at most some 131,000 (for 65,536
	// empty lines, an offset and a time each).
	DefaultMaxValues = 1 << 18
	// DefaultAllocFactor and DefaultAllocBase make the default bound on
	// the memory one decoded message takes: 8 bytes per byte of the
	// message, plus 64 KiB. A batch of output lines takes about 4 bytes
	// per byte, a directory listing of short names up to 7.
	DefaultAllocFactor = 8
	DefaultAllocBase   = 64 << 10
)

// DecodeLimits bounds what decoding one message may cost, so that a peer
// cannot make the decoder allocate much more than it sent: a naive decoder
// turns a 2 MiB frame of empty maps into 270 MB. The decoder counts the
// values an array or map header announces and charges every str, bin,
// array, map and boxed number its size in memory before allocating it; as
// soon as either bound would be passed it refuses the message with an error
// matching ErrMalformed that names the bound. A zero field means its
// default.
type DecodeLimits struct {
	// MaxValues bounds the values in one message: every nil, bool,
	// number, str, bin, array, map and map key, at any depth.
	MaxValues int
	// AllocFactor and AllocBase bound the bytes one decoded message takes
	// in memory: AllocFactor bytes per byte of the message, plus AllocBase.
	AllocFactor int
	AllocBase   int
}

func (l DecodeLimits) withDefaults() DecodeLimits {
	if l.MaxValues <= 0 {
		l.MaxValues = DefaultMaxValues
	}
	if l.AllocFactor <= 0 {
		l.AllocFactor = DefaultAllocFactor
	}
	if l.AllocBase <= 0 {
		l.AllocBase = DefaultAllocBase
	}
	return l
}

// DecodeValue decodes p with the default DecodeLimits; see
// DecodeLimits.DecodeValue.
func DecodeValue(p []byte) (any, error) { return DecodeLimits{}.DecodeValue(p) }

// DecodeValue decodes the single msgpack value that makes up all of p.
// Values come back as nil, bool, int64 (uint64 only above math.MaxInt64),
// float64, string (from str, which must be valid UTF-8), []byte (from bin,
// copied), []any and map[string]any. Extension types, maps with non-string
// keys, nesting deeper than 32 levels, trailing bytes and a value that
// would pass l's bounds are errors matching ErrMalformed.
func (l DecodeLimits) DecodeValue(p []byte) (any, error) {
	l = l.withDefaults()
	v, _, err := l.decodeValue(p, l.memBound(len(p)))
	return v, err
}

// memBound is the memory decoding a message of n bytes may take; l has
// its defaults.
func (l DecodeLimits) memBound(n int) int { return l.AllocFactor*n + l.AllocBase }

// decodeValue is DecodeValue within mem bytes of memory, at most l's bound
// (l has its defaults). It also returns the bytes it charged.
func (l DecodeLimits) decodeValue(p []byte, mem int) (any, int, error) {
	d := decoder{p: p, lim: l, values: l.MaxValues - 1, mem: mem, limit: mem}
	v, err := d.value(0)
	if err == nil && d.off != len(p) {
		err = d.errorf("%d trailing bytes", len(p)-d.off)
	}
	return v, mem - d.mem, err
}

type decoder struct {
	p   []byte
	off int
	lim DecodeLimits
	// values and mem are what is left of the bounds: values not yet
	// announced by a header, bytes not yet charged.
	values int
	mem    int
	limit  int // mem at the start
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: msgpack at byte %d: %s", ErrMalformed, d.off, fmt.Sprintf(format, args...))
}

// count charges n more values to the bound.
func (d *decoder) count(n uint64) error {
	if n > uint64(d.values) {
		return d.errorf("message has more than %d values (DecodeLimits.MaxValues)", d.lim.MaxValues)
	}
	d.values -= int(n)
	return nil
}

// alloc charges size bytes of memory to the bound; call it before
// allocating them.
func (d *decoder) alloc(size uint64) error {
	if size > uint64(d.mem) && d.limit < d.lim.memBound(len(d.p)) {
		return d.errorf("decoded, the message would take more than the %d bytes of the memory budget it could have (wire.WebSocketConfig.Budget)", d.limit)
	}
	if size > uint64(d.mem) {
		return d.errorf("decoded, the message would take more than %d bytes of memory (DecodeLimits: AllocFactor %d × %d bytes + AllocBase %d)",
			d.lim.AllocFactor*len(d.p)+d.lim.AllocBase, d.lim.AllocFactor, len(d.p), d.lim.AllocBase)
	}
	d.mem -= int(size)
	return nil
}

// Sizes in memory of decoded values, as the Go runtime allocates them,
// slightly over-estimated: TestDecodeChargesCoverAllocations checks them.
const (
	boxSize    = 8  // a number stored in an interface
	strHeader  = 16 // a non-empty string stored in an interface
	sliceBox   = 24 // a slice stored in an interface
	elemSize   = 16 // an interface in a []any
	mapHeader  = 48
	mapGroup   = 8 + 8*(16+16) // eight control bytes and eight key/value slots
	mapTable   = 64            // a table's header
	tableSlots = 1024          // the largest table
)

// allocSize is the memory the runtime takes for an allocation of n bytes
// of pointer-free data: below 16 bytes, a share of a 16-byte block; then n
// rounded up to its size class (classes are less than 20% apart above 128
// bytes) or, above 32 KiB, to a page.
func allocSize(n uint64) uint64 {
	switch {
	case n < 16:
		return (n + 7) &^ 7
	case n <= 128:
		return (n + 15) &^ 15
	case n <= 32<<10:
		return (n + n/4 + 15) &^ 15
	default:
		return n + 8<<10
	}
}

// ptrAllocSize is allocSize for data holding pointers, which may carry an
// 8-byte header.
func ptrAllocSize(n uint64) uint64 { return allocSize(n + 8) }

// mapSize is the memory of a map[string]any made for n entries: a header,
// then, for up to 8 entries, one group of 8 slots, else tables of groups
// with 7/8 of their slots in use at most.
func mapSize(n uint64) uint64 {
	switch {
	case n == 0:
		return mapHeader
	case n <= 8:
		return mapHeader + ptrAllocSize(mapGroup)
	}
	slots := uint64(1) << bits.Len64((n*8+6)/7-1)
	tables := max(1, slots/tableSlots)
	perTable := min(slots, tableSlots) / 8 * mapGroup
	return mapHeader + ptrAllocSize(8*tables) + tables*(mapTable+ptrAllocSize(perTable))
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

// number reads a big-endian number of size bytes that will be boxed.
func (d *decoder) number(size int) (uint64, error) {
	v, err := d.uint(size)
	if err == nil {
		err = d.alloc(boxSize)
	}
	return v, err
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
		return int64(t), nil // small integers are boxed without allocating
	case t >= 0xe0:
		return int64(int8(t)), d.alloc(boxSize)
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
		if err := d.alloc(sliceBox + allocSize(n)); err != nil {
			return nil, err
		}
		return append([]byte{}, b...), nil
	case 0xca:
		v, err := d.number(4)
		return float64(math.Float32frombits(uint32(v))), err
	case 0xcb:
		v, err := d.number(8)
		return math.Float64frombits(v), err
	case 0xcc, 0xcd, 0xce, 0xcf:
		v, err := d.number(1 << (t - 0xcc))
		if v > math.MaxInt64 {
			return v, err
		}
		return int64(v), err
	case 0xd0, 0xd1, 0xd2, 0xd3:
		size := 1 << (t - 0xd0)
		v, err := d.number(size)
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

// strBytes takes a str of n bytes, which must be valid UTF-8, and charges
// size bytes for it.
func (d *decoder) strBytes(n, size uint64) ([]byte, error) {
	b, err := d.take(n)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(b) {
		return nil, d.errorf("str is not valid UTF-8")
	}
	return b, d.alloc(size)
}

func (d *decoder) str(n uint64) (any, error) {
	size := uint64(0) // "" is boxed without allocating
	if n > 0 {
		size = strHeader + allocSize(n)
	}
	b, err := d.strBytes(n, size)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// key reads a map key, which must be a str; unlike a str value, it is not
// boxed.
func (d *decoder) key(depth int) (string, error) {
	tb, err := d.take(1)
	if err != nil {
		return "", err
	}
	var n uint64
	switch t := tb[0]; {
	case t&0xe0 == 0xa0:
		n = uint64(t & 0x1f)
	case t >= 0xd9 && t <= 0xdb:
		if n, err = d.uint(1 << (t - 0xd9)); err != nil {
			return "", err
		}
	default:
		d.off--
		k, err := d.value(depth)
		if err != nil {
			return "", err
		}
		return "", d.errorf("map key is %s, want str", typeName(k))
	}
	b, err := d.strBytes(n, allocSize(n))
	return string(b), err
}

func (d *decoder) arrayBody(n uint64, depth int) (any, error) {
	// Every element takes at least one byte: refuse counts the input cannot hold.
	if n > uint64(len(d.p)-d.off) {
		return nil, d.errorf("array of %d elements is truncated", n)
	}
	if err := d.count(n); err != nil {
		return nil, err
	}
	if err := d.alloc(sliceBox + ptrAllocSize(n*elemSize)); err != nil {
		return nil, err
	}
	l := make([]any, n)
	for i := range l {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		l[i] = v
	}
	return l, nil
}

func (d *decoder) mapBody(n uint64, depth int) (any, error) {
	if n > uint64(len(d.p)-d.off)/2 {
		return nil, d.errorf("map of %d entries is truncated", n)
	}
	if err := d.count(2 * n); err != nil {
		return nil, err
	}
	if err := d.alloc(mapSize(n)); err != nil {
		return nil, err
	}
	m := make(map[string]any, n)
	for range n {
		k, err := d.key(depth + 1)
		if err != nil {
			return nil, err
		}
		if m[k], err = d.value(depth + 1); err != nil {
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
