package commands

import (
	"bytes"
	"regexp"
	"unicode/utf8"
)

// lineSplitter cuts one stream of output into whole lines: newline_re
// matches become '\n', lines longer than max characters are broken, and a
// trailing partial line waits for more text. Each line keeps the time its
// first byte arrived.
type lineSplitter struct {
	re      *regexp.Regexp
	max     int
	partial []byte
	since   float64 // arrival time of partial's first byte
}

// add takes newly arrived bytes and emits every line they complete,
// without its '\n'; the line is only valid during the call and may hold
// invalid UTF-8.
func (s *lineSplitter) add(data []byte, now float64, emit func(line []byte, t float64)) {
	if len(data) == 0 {
		return
	}
	if len(s.partial) == 0 {
		s.since = now
	}
	buf := append(s.partial, data...)
	held := 0
	if buf[len(buf)-1] == '\r' { // may be the start of "\r\n"
		held = 1
	}
	work := buf[:len(buf)-held]
	if s.re != nil && s.re.Match(work) {
		work = s.re.ReplaceAll(work, []byte{'\n'})
	}
	t := s.since
	for {
		i := bytes.IndexByte(work, '\n')
		if i < 0 {
			break
		}
		s.emitLong(work[:i], t, emit)
		work = work[i+1:]
		t = now
	}
	work = s.breakLong(work, t, emit)
	if len(work) == 0 && held == 0 {
		s.partial = s.partial[:0]
		return
	}
	s.since = t
	rest := append(work[:len(work):len(work)], buf[len(buf)-held:]...)
	s.partial = append(s.partial[:0], rest...)
}

// end emits the partial line, if any, as a line of its own.
func (s *lineSplitter) end(emit func(line []byte, t float64)) {
	if len(s.partial) > 0 {
		s.add([]byte{'\n'}, s.since, emit)
	}
}

// emitLong emits content as one or more lines of at most max characters.
func (s *lineSplitter) emitLong(content []byte, t float64, emit func([]byte, float64)) {
	emit(s.breakLong(content, t, emit), t)
}

// breakLong emits lines of max-1 characters (plus '\n') while content holds
// at least max characters, and returns what is left.
func (s *lineSplitter) breakLong(content []byte, t float64, emit func([]byte, float64)) []byte {
	for n := utf8.RuneCount(content); n >= s.max; n -= s.max - 1 {
		cut := 0
		for range s.max - 1 {
			_, size := utf8.DecodeRune(content[cut:])
			cut += size
		}
		emit(content[:cut], t)
		content = content[cut:]
	}
	return content
}
