package commands

import (
	"path/filepath"
	"syscall"
	"time"
)

// parseCpdir reads the args of "cpdir": copy a directory tree, as
// copyTree does on this platform.
func parseCpdir(a argMap) (runner, error) {
	if err := a.require("from_path", "to_path"); err != nil {
		return nil, err
	}
	from, err1 := a.string("from_path", "")
	to, err2 := a.string("to_path", "")
	logEnviron, err3 := a.bool("logEnviron", false)
	timeout, err4 := a.seconds("timeout")
	maxTime, err5 := a.seconds("maxTime")
	if err := firstErr(err1, err2, err3, err4, err5); err != nil {
		return nil, err
	}
	if _, ok := a["timeout"]; !ok {
		timeout = 120 * time.Second
	}
	p := &process{dir: filepath.Dir(to), logEnviron: logEnviron,
		timeout: timeout, maxTime: maxTime, interrupt: syscall.SIGKILL,
		wantStdout: true, wantStderr: true}
	return copyTree(p, from, to)
}
