package commands

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// DefaultNewlineRE is the newline pattern a stock master sends: it turns
// carriage returns, cursor movements and backspace runs into line breaks.
const DefaultNewlineRE = `(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)`

// Settings says how command output is batched before it goes to the master;
// the master sets them with set_worker_settings. A zero field means the
// stock default (64 KiB, 5 s, [DefaultNewlineRE], 4096).
type Settings struct {
	BufferSize    int           // bytes of output collected before an update is sent
	BufferTimeout time.Duration // longest time output waits in the buffer
	NewlineRE     string        // Python regular expression of line breaks
	MaxLineLength int           // longer lines are split (in characters)
}

// ParseSettings is Limits.ParseSettings with the default limits.
func ParseSettings(args map[string]any) (Settings, error) { return Limits{}.ParseSettings(args) }

// ParseSettings reads the args of a set_worker_settings request; all four
// settings are required, as in the stock slave, and buffer_size and
// max_line_length must keep within l.
func (l Limits) ParseSettings(args map[string]any) (Settings, error) {
	var s Settings
	for _, k := range []string{"buffer_size", "buffer_timeout", "newline_re", "max_line_length"} {
		if _, ok := args[k]; !ok {
			return s, fmt.Errorf("message did not contain obligatory setting %q", k)
		}
	}
	a := argMap(args)
	size, err1 := a.int("buffer_size", 0)
	timeout, err2 := a.seconds("buffer_timeout")
	re, err3 := a.string("newline_re", "")
	maxLine, err4 := a.int("max_line_length", 0)
	s = Settings{BufferSize: size, BufferTimeout: timeout, NewlineRE: re, MaxLineLength: maxLine}
	if err := firstErr(err1, err2, err3, err4, l.withDefaults().checkSettings(s)); err != nil {
		return s, err
	}
	_, err := s.withDefaults().compile()
	return s, err
}

func (s Settings) withDefaults() Settings {
	if s.BufferSize <= 0 {
		s.BufferSize = 64 * 1024
	}
	if s.BufferTimeout <= 0 {
		s.BufferTimeout = 5 * time.Second
	}
	if s.NewlineRE == "" {
		s.NewlineRE = DefaultNewlineRE
	}
	if s.MaxLineLength < 2 {
		s.MaxLineLength = 4096
	}
	return s
}

// compile translates the Python pattern for Go's regexp package. The only
// construct Go lacks in the stock pattern is the look-ahead "(?=.)" after a
// carriage return; dropping it is safe because the line splitter holds back
// a trailing '\r' until more text (or the end) arrives.
func (s Settings) compile() (*regexp.Regexp, error) {
	re, err := regexp.Compile(strings.ReplaceAll(s.NewlineRE, "(?=.)", ""))
	if err != nil {
		return nil, fmt.Errorf("newline_re: %w", err)
	}
	return re, nil
}
