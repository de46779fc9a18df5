package commands

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

var envRef = regexp.MustCompile(`\$\{([0-9a-zA-Z_]*)\}`)

// childEnv builds a child's environment from the slave's own (base) and
// the command's env arg, the way the stock slave does: a list value is
// joined with ':'; a nil value removes the variable; PYTHONPATH gets
// ":${PYTHONPATH}" appended; "${NAME}" in a value is replaced by the
// slave's NAME (empty if unset), which is how PATH is extended. PWD is set
// to the working directory. The result is sorted by name. Names are
// compared as the platform does (see envKey).
func childEnv(base []string, overrides map[string]any, workdir string) ([]string, error) {
	slaveEnv := envMap(base)
	env := envMap(base)
	for k, v := range overrides {
		k = envKey(k)
		if v == nil {
			delete(env, k)
			continue
		}
		s, ok := asString(v)
		if list, isList := v.([]any); isList {
			parts, err := argMap{k: list}.strings(k)
			if err != nil {
				return nil, err
			}
			s, ok = strings.Join(parts, string(os.PathListSeparator)), true
		}
		if !ok {
			return nil, fmt.Errorf("'env' values must be strings or lists; key '%s' is incorrect", k)
		}
		if k == "PYTHONPATH" {
			s += string(os.PathListSeparator) + "${PYTHONPATH}"
		}
		env[k] = envRef.ReplaceAllStringFunc(s, func(ref string) string {
			return slaveEnv[envKey(ref[2:len(ref)-1])]
		})
	}
	env["PWD"] = workdir
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out, nil
}

// envMap maps the names (see envKey) of env's NAME=value entries to their
// values.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if kv == "" {
			continue
		}
		// a name is never empty, and may start with "=" on Windows ("=C:")
		k, v, _ := strings.Cut(kv[1:], "=")
		m[envKey(kv[:1]+k)] = v
	}
	return m
}
