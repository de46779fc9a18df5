package commands

import (
	"errors"
	"os/exec"
)

// openTerminal always fails on Windows: this slave has no pseudo-terminals
// there (ConPTY is not used), and runs the command on pipes.
func openTerminal(*exec.Cmd) (*terminal, error) {
	return nil, errors.New("this slave has no pseudo-terminals on Windows")
}
