package commands

import "strings"

// envKey is the name under which an environment variable is known: in
// upper case on Windows, whose names ignore case ("Path" is PATH), as
// Python's os.environ there keeps them, so an env arg's PATH replaces the
// slave's Path instead of joining it.
func envKey(name string) string { return strings.ToUpper(name) }
