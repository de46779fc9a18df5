package commands

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// parseShell reads the args of "shell": run a program in workdir.
func parseShell(a argMap) (runner, error) {
	if err := a.require("workdir", "command"); err != nil {
		return nil, err
	}
	p := &process{}
	var err error
	p.dir, err = a.string("workdir", "")
	if err != nil {
		return nil, err
	}
	if err := p.setCommand(a["command"]); err != nil {
		return nil, err
	}
	env, ok := a["env"].(map[string]any)
	if a["env"] != nil && !ok {
		return nil, fmt.Errorf("argument \"env\": want a map, got %T", a["env"])
	}
	if p.env, err = childEnv(os.Environ(), env, p.dir); err != nil {
		return nil, err
	}
	if p.logfiles, err = parseLogfiles(a["logfiles"]); err != nil {
		return nil, err
	}
	stdin, err := a.string("initial_stdin", "")
	if err != nil {
		return nil, err
	}
	if a["initial_stdin"] != nil {
		p.stdin = []byte(stdin)
	}
	sig, err := a.string("interruptSignal", "KILL")
	if err != nil {
		return nil, err
	}
	if p.interrupt, err = parseSignal(sig); err != nil {
		return nil, err
	}
	var errs [7]error
	p.wantStdout, errs[0] = a.bool("want_stdout", true)
	p.wantStderr, errs[1] = a.bool("want_stderr", true)
	p.usePTY, errs[2] = a.bool("usePTY", false)
	p.logEnviron, errs[3] = a.bool("logEnviron", false)
	p.timeout, errs[4] = a.seconds("timeout")
	p.maxTime, errs[5] = a.seconds("maxTime")
	p.sigterm, errs[6] = a.seconds("sigtermTime")
	return p, firstErr(errs[:]...)
}

// setCommand reads the command arg: a string is a script for the shell
// (see execCmd), a list is the argv itself, whose items may be
// ["obfuscated", real, shown].
func (p *process) setCommand(v any) error {
	if s, ok := asString(v); ok {
		p.script, p.argv = s, nil
		p.display = s
		p.argvRepr = pyRepr(s)
		return nil
	}
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return fmt.Errorf("argument \"command\": want a string or a non-empty list, got %v", v)
	}
	shown := make([]string, len(list))
	p.argv = make([]string, len(list))
	for i, w := range list {
		if o, ok := w.([]any); ok && len(o) == 3 && o[0] == "obfuscated" {
			real, ok1 := asString(o[1])
			fake, ok2 := asString(o[2])
			if ok1 && ok2 {
				p.argv[i], shown[i] = real, fake
				continue
			}
		}
		s, ok := asString(w)
		if !ok {
			return fmt.Errorf("argument \"command\": item %d is %T, not a string", i, w)
		}
		p.argv[i], shown[i] = s, s
	}
	quoted := make([]string, len(shown))
	reprs := make([]string, len(shown))
	for i, s := range shown {
		quoted[i], reprs[i] = shellQuote(s), pyRepr(s)
	}
	p.display = strings.Join(quoted, " ")
	p.argvRepr = "[" + strings.Join(reprs, ", ") + "]"
	return nil
}

var shellSafe = regexp.MustCompile(`^[\w@%+=:,./-]+$`)

// shellQuote quotes s for a POSIX shell, for display only.
func shellQuote(s string) string {
	if s == "" {
		return `""`
	}
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// pyRepr shows s the way the stock slave's header does.
func pyRepr(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`, "\n", `\n`).Replace(s) + "'"
}
