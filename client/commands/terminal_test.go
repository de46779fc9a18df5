package commands

import (
	"errors"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// TestTerminalFinishGrace: once the command exited, finish waits for the
// rest of the output as long as a process may hold the terminal, but no
// longer than pipeGrace; then our side is closed.
func TestTerminalFinishGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, done := range []bool{true, false} {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			copied := make(chan struct{})
			if done {
				close(copied)
			}
			start := time.Now()
			(&terminal{pty: r}).finish(copied)
			want := map[bool]time.Duration{true: 0, false: pipeGrace}[done]
			if took := time.Since(start); took != want {
				t.Errorf("output copied %v: finish took %v, want %v", done, took, want)
			}
			if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
				t.Errorf("output copied %v: our side not closed: %v", done, err)
			}
			w.Close()
		}
	})
}
