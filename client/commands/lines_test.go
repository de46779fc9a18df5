package commands

import (
	"reflect"
	"strings"
	"testing"
)

type emitted struct {
	line string
	t    float64
}

func splitAll(t *testing.T, max int, chunks ...string) []emitted {
	t.Helper()
	re, err := Settings{}.withDefaults().compile()
	if err != nil {
		t.Fatal(err)
	}
	s := &lineSplitter{re: re, max: max}
	var out []emitted
	emit := func(line []byte, at float64) { out = append(out, emitted{string(line) + "\n", at}) }
	for i, c := range chunks {
		s.add([]byte(c), float64(i+1), emit)
	}
	s.end(emit)
	return out
}

func TestLineSplitter(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		chunks []string
		want   []emitted
	}{
		{"whole lines", 100, []string{"a\nb\n"}, []emitted{{"a\n", 1}, {"b\n", 1}}},
		{"partial line keeps its first time", 100, []string{"ab", "c\nd", "e\n"},
			[]emitted{{"abc\n", 1}, {"de\n", 2}}},
		{"crlf split across chunks", 100, []string{"a\r", "\nb\n"}, []emitted{{"a\n", 1}, {"b\n", 2}}},
		{"carriage return progress", 100, []string{"10%\r20%\r30%\n"},
			[]emitted{{"10%\n", 1}, {"20%\n", 1}, {"30%\n", 1}}},
		{"backspaces and cursor codes", 100, []string{"a\x08\x08b\x1b[2Jc\x1b[12;3Hd\n"},
			[]emitted{{"a\n", 1}, {"b\n", 1}, {"c\n", 1}, {"d\n", 1}}},
		{"trailing cr at the end", 100, []string{"a\r"}, []emitted{{"a\n", 1}}},
		{"partial line at the end", 100, []string{"abc"}, []emitted{{"abc\n", 1}}},
		{"long line broken", 4, []string{"abcdefg\n"}, []emitted{{"abc\n", 1}, {"def\n", 1}, {"g\n", 1}}},
		{"long partial broken early", 4, []string{"abcdef", "g\n"},
			[]emitted{{"abc\n", 1}, {"def\n", 1}, {"g\n", 1}}},
		{"characters not bytes", 3, []string{"ééé\n"}, []emitted{{"éé\n", 1}, {"é\n", 1}}},
		{"utf-8 split across chunks", 100, []string{"\xc3", "\xa9\n"}, []emitted{{"é\n", 1}}},
		{"nothing", 100, []string{""}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitAll(t, tt.max, tt.chunks...)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSettingsCompileStockPattern(t *testing.T) {
	re, err := Settings{NewlineRE: DefaultNewlineRE}.compile()
	if err != nil {
		t.Fatal(err)
	}
	if got := re.ReplaceAllString("a\r\nb\x1b[u", "|"); got != "a|b|" {
		t.Errorf("got %q", got)
	}
}

func TestParseSettings(t *testing.T) {
	s, err := ParseSettings(map[string]any{"buffer_size": int32(100), "buffer_timeout": 0.5,
		"newline_re": `\n`, "max_line_length": uint16(80)})
	if err != nil {
		t.Fatal(err)
	}
	if s.BufferSize != 100 || s.BufferTimeout.Seconds() != 0.5 || s.MaxLineLength != 80 {
		t.Errorf("got %+v", s)
	}
	if _, err := ParseSettings(map[string]any{"buffer_size": 1}); err == nil {
		t.Error("missing settings accepted")
	}
	_, err = ParseSettings(map[string]any{"buffer_size": 1, "buffer_timeout": 1, "newline_re": "(",
		"max_line_length": 10})
	if err == nil || !strings.Contains(err.Error(), "newline_re") {
		t.Errorf("bad pattern: err = %v", err)
	}
}
