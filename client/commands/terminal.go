package commands

import (
	"io"
	"os"
	"slices"
	"time"
)

// terminal is the pseudo-terminal a usePTY command runs on: its stdin,
// stdout, stderr and controlling terminal (see openTerminal). What the
// command writes there, stdout and stderr alike, goes to the master as
// stdout, as with the stock slave.
type terminal struct {
	pty *os.File // our side; its Read ends when it is closed
	tty *os.File // the command's side, which we close once it started
}

// started closes our copy of the command's side, so that reading ours
// ends once every process of the command has closed its own.
func (t *terminal) started() { t.tty.Close() }

// copyOut sends what the command writes on the terminal to out, until no
// process has the terminal open any more (EIO on Linux, EOF elsewhere) or
// finish closes it.
func (t *terminal) copyOut(out io.Writer) { _, _ = io.Copy(out, t.pty) }

// writeIn types data on the terminal, then end-of-file (^D; twice after a
// partial line, whose first ^D only ends it). The terminal echoes it, as a
// terminal does, so the output shows it too.
func (t *terminal) writeIn(data []byte) {
	eof := []byte{4}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		eof = []byte{4, 4}
	}
	_, _ = t.pty.Write(append(slices.Clip(data), eof...))
}

// finish waits for copied, closed when copyOut has read everything,
// for at most pipeGrace after the command exited (a background process
// may keep the terminal open), then closes our side, which ends copyOut
// and writeIn for good.
func (t *terminal) finish(copied <-chan struct{}) {
	grace := time.NewTimer(pipeGrace)
	defer grace.Stop()
	select {
	case <-copied:
	case <-grace.C:
	}
	t.pty.Close()
}
