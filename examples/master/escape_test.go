package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// rawControls are bytes that must not reach the master's terminal from a
// slave: ESC, BEL, CR, DEL and the UTF-8 of the C1 control CSI.
var rawControls = []string{"\x1b", "\x07", "\r", "\x7f", "\u009b"}

// TestSlaveTextOnStdoutIsEscapedAndCapped: what slaves report and print
// reaches the master's stdout with its control characters escaped, and a
// build printing megabytes prints only max_printed_output of them.
func TestSlaveTextOnStdoutIsEscapedAndCapped(t *testing.T) {
	m, out := startMaster(t, testConfig(t, `
[master]
[[slaves]]
name = "s1"
password = "pw1"
[[slaves]]
name = "evil"
password = "pw2"
[[builders]]
name = "b"
slaves = ["s1"]
  [[builders.steps]]
  name = "noisy"
  shell = "printf 'a\\033[31mred\\033]0;pwned\\007b\\177\\302\\233c\\n'; head -c 3000000 /dev/zero | tr '\\0' x | fold -w 100"
`))
	slavetest.Attach(t, m.mgr, "evil", "pw2", slave.Info{Version: "3.7\x1b[31m\n==> forged line\u009b"})
	attachGoSlave(t, m, "s1", "pw1")
	before := len(out.String())
	h, err := m.runner.Force("b", "test")
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if h.State() != builds.Success {
		t.Fatalf("build %s:\n%s", h.State(), out.String())
	}
	got := out.String()
	for _, c := range rawControls {
		if strings.Contains(got, c) {
			t.Errorf("stdout holds the raw %q", c)
		}
	}
	for _, want := range []string{
		`noisy | a\x1b[31mred\x1b]0;pwned\ab\x7f\u009bc`,
		`(3.7\x1b[31m\n==> forged line\u009b)`,
		"b #1: noisy | ... ",
		" bytes of output not shown",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if strings.Contains(got, "\n==> forged line") {
		t.Error("a slave forged a line of the master's")
	}
	if n := len(out.String()) - before; n > 100<<10 {
		t.Errorf("a build printing 3 MB grew stdout by %d bytes", n)
	}
	if step := m.history.Recent(1)[0].Steps[0]; len(step.Output) > 2*builds.DefaultStepBytes || !strings.Contains(step.Output, "bytes of earlier output not shown") {
		t.Errorf("the page keeps %d bytes of the step's output, starting %.80q", len(step.Output), step.Output)
	}
	for _, limit := range []string{"limit=max_printed_output", "limit=max_step_output"} {
		if n := len(out.Matching(limit)); n != 1 {
			t.Errorf("%d log lines with %s, want 1", n, limit)
		}
	}
}

// TestLogsEscapeSlaveText: both log formats write no raw control
// character of a value a slave sent.
func TestLogsEscapeSlaveText(t *testing.T) {
	for _, json := range []bool{false, true} {
		var buf testlog.Buffer
		newLogger(&buf, json).Warn("slave said", "version", "3.7\x1b[31m\x07\r\x7f\u009b", "err", errorString("lost:\x1b]0;x\x07"))
		line := buf.String()
		for _, c := range rawControls {
			if strings.Contains(line, c) {
				t.Errorf("json=%v: the log holds the raw %q: %q", json, c, line)
			}
		}
		if bytes.Count([]byte(line), []byte("\n")) != 1 {
			t.Errorf("json=%v: not one line: %q", json, line)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
