//go:build unix

package commands

// envKey is the name under which an environment variable is known:
// names are case-sensitive on Unix.
func envKey(name string) string { return name }
