package pb

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"unicode/utf8"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/internal/peek"
)

// Banana's type bytes: each token is a base-128 number (low digit first,
// every digit below 0x80) followed by one of these.
const (
	tokList    = 0x80
	tokInt     = 0x81
	tokString  = 0x82
	tokNeg     = 0x83
	tokFloat   = 0x84
	tokLongInt = 0x85
	tokLongNeg = 0x86
	tokVocab   = 0x87
)

// maxPrefix is Twisted's limit on the digits of a token's number.
const maxPrefix = 64

// SizeLimit is Twisted's limit on one string's bytes and one list's
// elements (banana.SIZE_LIMIT); longer ones are refused as they are
// announced, before anything is read or allocated for them.
const SizeLimit = 640 * 1024

// Defaults for the zero values of Limits.
const (
	DefaultMaxMessageBytes = 1 << 20
	DefaultMaxDepth        = 32
	// DefaultAllocFactor bounds the memory decoding a message may take to
	// this many bytes per byte read, plus allocSlack.
	DefaultAllocFactor = 8
)

// allocSlack is the allocation every message may take whatever its size.
const allocSlack = 4 << 10

// Limits bound what one message from a peer may make the decoder read and
// allocate. A message over any of them is refused with an error matching
// ErrTooLarge (size, allocation) or ErrMalformed (depth), and the
// connection is dropped. The zero value means the defaults.
type Limits struct {
	// MaxMessageBytes bounds the bytes of one message (one top-level
	// banana list); DefaultMaxMessageBytes if 0. Stock peers send file
	// transfers in blocks of at most 256 KiB.
	MaxMessageBytes int
	// MaxDepth bounds the nesting of lists; DefaultMaxDepth if 0.
	MaxDepth int
	// AllocFactor bounds the memory the decoded message takes to this many
	// bytes per byte of the message (plus 4 KiB); DefaultAllocFactor if 0.
	AllocFactor int
}

func (l Limits) withDefaults() Limits {
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.AllocFactor <= 0 {
		l.AllocFactor = DefaultAllocFactor
	}
	return l
}

// Errors of the decoder; the error returned wraps one of them and says
// what was wrong and where.
var (
	// ErrMalformed is input that is not banana/jelly as PB sends it.
	ErrMalformed = errors.New("malformed PB input")
	// ErrTooLarge is input over one of the Limits.
	ErrTooLarge = errors.New("PB input over a limit")
)

// vocabulary is banana's "pb" dialect: these strings travel as VOCAB
// tokens carrying their index.
var vocabulary = [...]string{
	1: "None", "class", "dereference", "reference", "dictionary", "function", "instance", "list", "module",
	"persistent", "tuple", "unpersistable", "copy", "cache", "cached", "remote", "local", "lcache", "version",
	"login", "password", "challenge", "logged_in", "not_logged_in", "cachemessage", "message", "answer",
	"error", "decref", "decache", "uncache",
}

// vocabularyBytes holds the words of vocabulary as the []byte atoms the
// decoder returns (shared: never modify an atom).
var vocabularyBytes = func() (b [len(vocabulary)][]byte) {
	for i, w := range vocabulary {
		b[i] = []byte(w)
	}
	return b
}()

// vocabularyValues holds the words of vocabulary as decoded values, boxed
// once, so that a VOCAB token costs the decoder no allocation.
var vocabularyValues = func() (v [len(vocabulary)]any) {
	for i, b := range vocabularyBytes {
		v[i] = b
	}
	return v
}()

// vocabIndex maps a vocabulary word to its index.
var vocabIndex = func() map[string]int {
	m := make(map[string]int, len(vocabulary))
	for i, w := range vocabulary[1:] {
		m[w] = i + 1
	}
	return m
}()

// readBufferSize is the size of the buffer a connection reads a message
// through.
const readBufferSize = 4 << 10

// readBuffers holds the read buffers of connections between messages, so
// that an idle connection holds none: 10,000 idle slaves would otherwise
// keep 40 MiB of them.
var readBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

// reader reads banana tokens of one message and keeps its budget.
type reader struct {
	src     io.Reader     // the connection
	r       *bufio.Reader // from readBuffers while a message is read; nil when idle
	first   [1]byte       // the first byte of a message, read without a buffer
	pending bool          // first holds a byte not yet read
	lim     Limits
	read    int // bytes of the current message read so far
	alloc   int // bytes charged to the current message
	// share is the current message's share of a memory budget shared with
	// other connections: it reserves once its charges pass
	// unreservedAlloc, and the message holds what it took until handled.
	share budget.Reservation
}

// unreservedAlloc is what a message may take before it reserves from the
// memory budget: every connection may hold that much outside it.
const unreservedAlloc = 256 << 10

// newReader reads banana from src within lim and res's budget.
func newReader(src io.Reader, lim Limits, res budget.Reservation) *reader {
	return &reader{src: src, lim: lim.withDefaults(), share: res}
}

// await waits for the first byte of the next message. On an idle
// connection it waits without a buffer (on a socket, until the kernel has
// bytes; elsewhere, reading the first byte alone), then takes one for the
// rest of the message. Broker.Serve calls it at the top of its loop, so
// that an idle connection waits on a shallow stack: the runtime halves a
// stack at a GC only while less than a quarter of it is in use, and
// waiting deeper (in token, under message) kept every idle connection's
// stack at 8 KiB instead of 4 KiB. ready says the socket is known to
// have bytes, or to have ended: the poller resumed a parked connection.
func (r *reader) await(ready bool) error {
	if r.r != nil || r.src == nil {
		return nil
	}
	// On a socket, wait for the peer's bytes without reading them (unless
	// ready: the poller saw them): the buffer's first read then takes
	// what came in one system call.
	if c, ok := r.src.(net.Conn); ready || ok && peek.Wait(c) {
		r.take()
		return nil
	}
	for {
		n, err := r.src.Read(r.first[:])
		if n == 1 {
			r.take()
			r.pending = true
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// take takes a buffer to read the message through.
func (r *reader) take() {
	r.r = readBuffers.Get().(*bufio.Reader)
	r.r.Reset(r.src)
}

// buffered reports whether the reader holds a buffer, with bytes of the
// next message in it.
func (r *reader) buffered() bool { return r.r != nil }

// idle ends a message: it gives back what the message reserved beyond
// what it took, and the buffer if nothing is left in it (the next message
// takes one again).
func (r *reader) idle() {
	r.share.Shrink(int64(r.alloc))
	if r.r != nil && r.src != nil && r.r.Buffered() == 0 {
		r.drop()
	}
}

// release gives back what the last message reserved; call it once the
// message is handled.
func (r *reader) release() { r.share.Release() }

// drop gives the buffer back, with whatever it holds.
func (r *reader) drop() {
	if r.r != nil && r.src != nil {
		r.pending = false
		r.r.Reset(nil)
		readBuffers.Put(r.r)
		r.r = nil
	}
}

func (r *reader) errorf(base error, format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d of the message: %s", base, r.read, fmt.Sprintf(format, args...))
}

// begin starts a new message.
func (r *reader) begin() {
	r.read, r.alloc = 0, 0
	r.release()
}

// charge accounts n bytes of memory to the message and refuses it past
// its bound. Past unreservedAlloc, it first reserves from the budget what
// the largest message may take (or the whole budget, if less), and
// refuses a message that would take more than it reserved.
func (r *reader) charge(n int) error {
	r.alloc += n
	if r.alloc > r.lim.AllocFactor*r.read+allocSlack {
		return r.errorf(ErrTooLarge, "decoding would take more than %d bytes per byte read", r.lim.AllocFactor)
	}
	if b := r.share.Budget(); b != nil && r.alloc > unreservedAlloc {
		if r.share.Held() == 0 {
			if err := r.share.Acquire(min(int64(r.lim.AllocFactor*r.lim.MaxMessageBytes+allocSlack), b.Size())); err != nil {
				return fmt.Errorf("%w: at byte %d of the message: %w", ErrTooLarge, r.read, err)
			}
		}
		if int64(r.alloc) > r.share.Held() {
			return r.errorf(ErrTooLarge, "decoding would take more than the %d bytes of the memory budget it could have (BrokerConfig.Budget)", r.share.Held())
		}
	}
	return nil
}

// consumed accounts n bytes read and refuses the message past its size.
func (r *reader) consumed(n int) error {
	r.read += n
	if r.read > r.lim.MaxMessageBytes {
		return r.errorf(ErrTooLarge, "message longer than %d bytes", r.lim.MaxMessageBytes)
	}
	return nil
}

// token reads one token's number and type byte. The number's digits are
// bounded by maxPrefix; numbers that do not fit 64 bits are refused.
func (r *reader) token() (n uint64, typ byte, err error) {
	for i := 0; ; i++ {
		if r.r == nil { // idle: this is a message's first byte
			if err := r.await(false); err != nil {
				return 0, 0, err
			}
		}
		var c byte
		var err error
		if r.pending {
			c, r.pending = r.first[0], false
		} else {
			c, err = r.r.ReadByte()
		}
		if err != nil {
			if i > 0 || r.read > 0 {
				err = truncated(err)
			}
			return 0, 0, err
		}
		if err := r.consumed(1); err != nil {
			return 0, 0, err
		}
		if c >= 0x80 {
			return n, c, nil
		}
		if i >= maxPrefix {
			return 0, 0, r.errorf(ErrMalformed, "more than %d digits of prefix", maxPrefix)
		}
		if c != 0 && (i >= 10 || i == 9 && c > 1) {
			return 0, 0, r.errorf(ErrMalformed, "number does not fit 64 bits")
		}
		n |= uint64(c) << (7 * i)
	}
}

// truncated turns an EOF in the middle of a message into ErrUnexpectedEOF.
func truncated(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bytes reads a string token's n bytes into a new slice.
func (r *reader) bytes(n uint64) ([]byte, error) {
	if n > SizeLimit {
		return nil, r.errorf(ErrTooLarge, "string of %d bytes is over banana's limit of %d", n, SizeLimit)
	}
	if int(n) > r.lim.MaxMessageBytes-r.read {
		return nil, r.errorf(ErrTooLarge, "string of %d bytes makes the message longer than %d bytes", n, r.lim.MaxMessageBytes)
	}
	// Grow with the bytes that actually arrive, so that an announced
	// length costs nothing until it is sent: by doubling, each new array
	// charged before it is made (the first, at most 64 KiB, once filled).
	first := min(n, 64<<10)
	b := make([]byte, 0, first)
	for uint64(len(b)) < n {
		if len(b) == cap(b) {
			grown := min(2*uint64(cap(b)), n)
			if err := r.charge(int(grown)); err != nil {
				return nil, err
			}
			b = append(make([]byte, 0, grown), b...)
		}
		got, err := io.ReadFull(r.r, b[len(b):cap(b)])
		b = b[:len(b)+got]
		if err := r.consumed(got); err != nil {
			return nil, err
		}
		if err != nil {
			return nil, truncated(err)
		}
	}
	return b, r.charge(24 + int(first))
}

// float reads a FLOAT token's eight bytes.
func (r *reader) float() (float64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r.r, b[:]); err != nil {
		return 0, truncated(err)
	}
	if err := r.consumed(8); err != nil {
		return 0, err
	}
	return math.Float64frombits(binary.BigEndian.Uint64(b[:])), nil
}

// vocab returns the word a VOCAB token names.
func (r *reader) vocab(n uint64) ([]byte, error) {
	if n == 0 || n >= uint64(len(vocabulary)) {
		return nil, r.errorf(ErrMalformed, "unknown vocabulary index %d", n)
	}
	return vocabularyBytes[n], nil
}

// signed turns an INT/NEG/LONGINT/LONGNEG token into an int64.
func (r *reader) signed(n uint64, typ byte) (int64, error) {
	neg := typ == tokNeg || typ == tokLongNeg
	switch {
	case !neg && n > math.MaxInt64, neg && n > 1<<63:
		return 0, r.errorf(ErrMalformed, "integer does not fit 64 bits")
	case neg:
		return int64(-n), nil
	}
	return int64(n), nil
}

// writer appends banana tokens.
type writer struct {
	b []byte
	// vocab makes the words of the "pb" vocabulary travel as VOCAB tokens;
	// it is off for the dialect negotiation only.
	vocab bool
}

func (w *writer) number(n uint64, typ byte) {
	for {
		w.b = append(w.b, byte(n&0x7f))
		n >>= 7
		if n == 0 {
			break
		}
	}
	w.b = append(w.b, typ)
}

func (w *writer) list(n int) { w.number(uint64(n), tokList) }

func (w *writer) int(v int64) {
	switch {
	case v >= 0 && v <= math.MaxInt32:
		w.number(uint64(v), tokInt)
	case v > 0:
		w.number(uint64(v), tokLongInt)
	case v >= math.MinInt32:
		w.number(uint64(-v), tokNeg)
	default:
		w.number(uint64(-v), tokLongNeg) // -MinInt64 wraps to 1<<63, which is right
	}
}

func (w *writer) float(f float64) {
	w.b = append(w.b, tokFloat)
	w.b = binary.BigEndian.AppendUint64(w.b, math.Float64bits(f))
}

// atom appends a byte string, as a VOCAB token when it is a word of the
// vocabulary.
func (w *writer) atom(s string) {
	if w.vocab {
		if i, ok := vocabIndex[s]; ok {
			w.number(uint64(i), tokVocab)
			return
		}
	}
	w.number(uint64(len(s)), tokString)
	w.b = append(w.b, s...)
}

// bytes appends a byte string; like atom, and like Twisted's banana, it
// sends a word of the vocabulary as a VOCAB token.
func (w *writer) bytes(p []byte) {
	if w.vocab {
		if i, ok := vocabIndex[string(p)]; ok {
			w.number(uint64(i), tokVocab)
			return
		}
	}
	w.number(uint64(len(p)), tokString)
	w.b = append(w.b, p...)
}

// validUTF8 reports whether b is valid UTF-8, as jelly's "unicode" needs.
func validUTF8(b []byte) bool { return utf8.Valid(b) }
