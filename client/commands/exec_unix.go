//go:build unix

package commands

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// execCmd is the Cmd that runs the command as the stock slave does on
// POSIX systems: a script under /bin/sh -c, a list as the argv itself,
// its program looked up in the PATH of the command's environment.
func (p *process) execCmd() *exec.Cmd {
	argv := p.argv
	if argv == nil {
		argv = []string{"/bin/sh", "-c", p.script}
	}
	return &exec.Cmd{Path: lookPath(argv[0], p.env), Args: argv}
}

// lookPath finds name in the PATH of the child's environment env, as
// execvp would; a name with a slash is used as it is.
func lookPath(name string, env []string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range filepath.SplitList(envMap(env)["PATH"]) {
		if dir == "" {
			dir = "."
		}
		f := filepath.Join(dir, name)
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return f
		}
	}
	return name // Start reports it as not found
}

// killedBy says what killed the process, if a signal did ("signal 9").
func killedBy(ps *os.ProcessState, _ bool) string {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("signal %d", int(ws.Signal()))
	}
	return ""
}
