package commands

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// execCmd is the Cmd that runs the command as the stock slave does on
// Windows: a list whose program is an absolute path to an .exe directly,
// anything else (a script, a program to find in PATH with PATHEXT, a .bat)
// through %COMSPEC% /c. cmd.exe gets the command line `/s /c "..."`, so
// that it runs what is between the outer quotes as it is.
func (p *process) execCmd() *exec.Cmd {
	if p.argv != nil && filepath.IsAbs(p.argv[0]) && strings.EqualFold(filepath.Ext(p.argv[0]), ".exe") {
		return &exec.Cmd{Path: p.argv[0], Args: p.argv}
	}
	line := p.script
	if p.argv != nil {
		quoted := make([]string, len(p.argv))
		for i, a := range p.argv {
			quoted[i] = syscall.EscapeArg(a)
		}
		line = strings.Join(quoted, " ")
	}
	shell := comspec()
	return &exec.Cmd{Path: shell, Args: []string{shell, "/c", line},
		SysProcAttr: &syscall.SysProcAttr{CmdLine: syscall.EscapeArg(shell) + ` /s /c "` + line + `"`}}
}

// comspec is the command interpreter: %COMSPEC%, or cmd.exe in the
// system directory.
func comspec() string {
	if s := os.Getenv("COMSPEC"); s != "" {
		return s
	}
	return filepath.Join(os.Getenv("SystemRoot"), "System32", "cmd.exe")
}

// killedBy says what killed the process, if the slave did: Windows keeps
// no such record, so hardKilled (the slave terminated the job) is the
// answer.
func killedBy(_ *os.ProcessState, hardKilled bool) string {
	if hardKilled {
		return "terminating its job object"
	}
	return ""
}
