package commands

import "syscall"

// platformSignals is empty: Windows has no signals, and every name is one
// of the two ways procgroup.Group.Signal stops a job (KILL, or a console
// break for any other).
var platformSignals = map[string]syscall.Signal{}
