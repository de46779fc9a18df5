package commands

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// output collects a command's updates and sends them to the master in
// batches: a batch goes out when the next item would overflow BufferSize,
// or BufferTimeout after its first item arrived. Consecutive lines of the
// same stream are joined into one [text, offsets, times] value. It is safe
// for concurrent use; a send blocks its caller until the master answers,
// which slows a chatty process down instead of piling up memory.
type output struct {
	ctx     context.Context
	m       Master
	size    int
	timeout time.Duration
	re      *regexp.Regexp
	maxLine int

	mu        sync.Mutex
	splitters map[streamKey]*lineSplitter
	batch     []item
	batchLen  int
	text      []byte // the text of the batch's line items, reused across batches
	timer     *time.Timer
	sent      int   // batches sent so far; tells a late timer its batch is gone
	err       error // first failed send
}

// streamKey names a line stream: stdout, stderr, header, or a logfile.
type streamKey struct{ key, logname string }

// item is one [key, value] pair of a batch; for line streams value is nil
// and the lines so far are output.text[start:end], offsets and times.
type item struct {
	streamKey
	value      any
	start, end int
	runes      int
	offsets    []int64
	times      []float64
}

func newOutput(ctx context.Context, m Master, s Settings) (*output, error) {
	s = s.withDefaults()
	re, err := s.compile()
	if err != nil {
		return nil, err
	}
	return &output{ctx: ctx, m: m, size: s.BufferSize, timeout: s.BufferTimeout, re: re,
		maxLine: s.MaxLineLength, splitters: map[streamKey]*lineSplitter{}}, nil
}

// write adds raw text of stdout, stderr or header (logname "") or of the
// named logfile (key "log").
func (o *output) write(key, logname string, data []byte) {
	now := float64(time.Now().UnixNano()) / 1e9
	sk := streamKey{key, logname}
	o.mu.Lock()
	defer o.mu.Unlock()
	sp := o.splitters[sk]
	if sp == nil {
		sp = &lineSplitter{re: o.re, max: o.maxLine}
		o.splitters[sk] = sp
	}
	sp.add(data, now, func(line []byte, t float64) { o.addLine(sk, line, t) })
}

// header adds a line of text to the header stream.
func (o *output) header(format string, args ...any) {
	o.write("header", "", fmt.Appendf(nil, format, args...))
}

// send adds a plain [key, value] pair such as rc, elapsed, files or stat.
func (o *output) send(key string, value any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reserve(20)
	o.batch = append(o.batch, item{streamKey: streamKey{key: key}, value: value})
}

// endStreams turns every stream's partial line into a line of its own.
func (o *output) endStreams() {
	o.mu.Lock()
	defer o.mu.Unlock()
	keys := make([]streamKey, 0, len(o.splitters))
	for k := range o.splitters {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b streamKey) int {
		return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.logname, b.logname))
	})
	for _, k := range keys {
		o.splitters[k].end(func(line []byte, t float64) { o.addLine(k, line, t) })
	}
}

// close sends what is left and reports the first failed send.
func (o *output) close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushLocked()
	return o.err
}

// addLine adds one line (without its '\n') to the batch, invalid UTF-8
// replaced.
func (o *output) addLine(sk streamKey, line []byte, t float64) {
	if !utf8.Valid(line) {
		line = bytes.ToValidUTF8(line, []byte("\uFFFD"))
	}
	o.reserve(len(line) + 1 + 16)
	var it *item
	if n := len(o.batch); n > 0 && o.batch[n-1].value == nil && o.batch[n-1].streamKey == sk {
		it = &o.batch[n-1]
	} else {
		o.batch = append(o.batch, item{streamKey: sk, start: len(o.text)})
		it = &o.batch[len(o.batch)-1]
	}
	o.text = append(append(o.text, line...), '\n')
	it.end = len(o.text)
	it.runes += utf8.RuneCount(line) + 1
	it.offsets = append(it.offsets, int64(it.runes-1))
	it.times = append(it.times, t)
}

// reserve makes room for n more bytes in the batch, sending it if needed,
// and arms the timer for a batch that is about to get its first item.
func (o *output) reserve(n int) {
	if o.batchLen > 0 && o.batchLen+n > o.size {
		o.flushLocked()
	}
	if o.batchLen == 0 {
		batch := o.sent
		o.timer = time.AfterFunc(o.timeout, func() { o.flushOnTimer(batch) })
	}
	o.batchLen += n
}

func (o *output) flushOnTimer(batch int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if batch == o.sent {
		o.flushLocked()
	}
}

func (o *output) flushLocked() {
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	if len(o.batch) == 0 {
		return
	}
	pairs := make([][2]any, len(o.batch))
	for i := range o.batch {
		pairs[i] = o.batch[i].pair(o.text)
	}
	o.batch, o.batchLen, o.text = o.batch[:0], 0, o.text[:0]
	o.sent++
	if err := o.m.Update(o.ctx, pairs); err != nil && o.err == nil {
		o.err = fmt.Errorf("sending update: %w", err)
	}
}

func (it *item) pair(text []byte) [2]any {
	if it.value != nil {
		return [2]any{it.key, it.value}
	}
	lines := []any{string(text[it.start:it.end]), it.offsets, it.times}
	if it.key == "log" {
		return [2]any{"log", []any{it.logname, lines}}
	}
	return [2]any{it.key, lines}
}
