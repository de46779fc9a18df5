//go:build unix

package commands

import "syscall"

// platformSignals are the interrupt signals only Unix has.
var platformSignals = map[string]syscall.Signal{"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}
