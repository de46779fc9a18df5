package commands

import (
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// glob expands pattern like Python's glob.glob(pattern, recursive=True):
// "**" as a whole path component matches any number of directories, and
// wildcards do not match names starting with '.' unless the pattern does.
func glob(pattern string) []string {
	if !hasMagic(pattern) {
		if _, err := os.Lstat(pattern); err == nil {
			return []string{pattern}
		}
		return nil
	}
	dir, base := "", pattern
	if i := strings.LastIndexFunc(pattern, isSep); i >= 0 {
		dir, base = pattern[:i], pattern[i+1:]
		if dir == filepath.VolumeName(dir) { // the root: "/", `C:\`
			dir = pattern[:i+1]
		}
	}
	dirs := []string{dir}
	if hasMagic(dir) {
		dirs = glob(dir)
	}
	var out []string
	for _, d := range dirs {
		for _, name := range globIn(d, base) {
			out = append(out, joinRaw(d, name))
		}
	}
	return out
}

// globIn returns the names under dir that base matches.
func globIn(dir, base string) []string {
	listDir := dir
	if listDir == "" {
		listDir = "."
	}
	switch {
	case base == "**":
		return append([]string{""}, walkNames(listDir, "")...)
	case hasMagic(base):
		entries, _ := os.ReadDir(listDir) // an unreadable directory matches nothing
		var names []string
		pat := strings.ReplaceAll(base, "[!", "[^")
		for _, e := range entries {
			if hidden(e.Name()) && !hidden(base) {
				continue
			}
			if ok, _ := filepath.Match(pat, e.Name()); ok {
				names = append(names, e.Name())
			}
		}
		return names
	default:
		if _, err := os.Lstat(filepath.Join(listDir, base)); err == nil {
			return []string{base}
		}
		return nil
	}
}

// walkNames lists everything below dir that is not hidden, as paths
// relative to dir (prefixed with rel).
func walkNames(dir, rel string) []string {
	entries, _ := os.ReadDir(dir) // an unreadable directory has no names
	var names []string
	for _, e := range entries {
		if hidden(e.Name()) {
			continue
		}
		name := joinRaw(rel, e.Name())
		names = append(names, name)
		if e.IsDir() {
			names = append(names, walkNames(filepath.Join(dir, e.Name()), name)...)
		}
	}
	return names
}

func hasMagic(s string) bool { return strings.ContainsAny(s, "*?[") }

func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// isSep reports whether r separates path components ('/', and '\' on
// Windows).
func isSep(r rune) bool { return r < utf8.RuneSelf && os.IsPathSeparator(uint8(r)) }

// joinRaw joins like Python's os.path.join: no cleaning, and an empty name
// gives dir with a trailing separator.
func joinRaw(dir, name string) string {
	if dir == "" {
		return name
	}
	if r, _ := utf8.DecodeLastRuneInString(dir); isSep(r) {
		return dir + name
	}
	return dir + string(os.PathSeparator) + name
}
