package config

import (
	"fmt"
	"regexp"
	"strings"
)

// positions maps the places of a TOML document to their lines: a table
// entry such as `slaves[1]` or `builders[0].steps[2]` to the line of its
// header, and a key such as `slaves[1].max_builds` to the line where it is
// set. The toml package reports lines only for syntax and type errors;
// this light scan of the text gives the lines of semantic problems. It
// knows headers, keys and multi-line strings, which is all a key's line
// needs; a place it cannot find falls back to its table's line.
type positions map[string]int

var (
	headerRE = regexp.MustCompile(`^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?`)
	keyRE    = regexp.MustCompile(`^\s*([A-Za-z0-9_\-."' ]+?)\s*=`)
)

// scanPositions reads the document's lines.
func scanPositions(src string) positions {
	pos := positions{}
	index := map[string]int{} // array of tables (path without its index) → current index
	table := ""
	inString := "" // the delimiter of the multi-line string being read
	for i, line := range strings.Split(src, "\n") {
		n := i + 1
		if inString != "" {
			if strings.Count(line, inString)%2 == 1 {
				inString = ""
			}
			continue
		}
		if m := headerRE.FindStringSubmatch(line); m != nil {
			table = resolve(index, splitKey(m[2]), m[1] == "[[")
			if _, seen := pos[table]; !seen {
				pos[table] = n
			}
			continue
		}
		m := keyRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := strings.Join(splitKey(m[1]), ".")
		if table != "" {
			key = table + "." + key
		}
		if _, seen := pos[key]; !seen {
			pos[key] = n
		}
		for _, d := range []string{`"""`, `'''`} {
			if strings.Count(line, d)%2 == 1 {
				inString = d
			}
		}
	}
	return pos
}

// resolve turns a header's dotted parts into a path with the current
// index of every array of tables on the way; a [[header]] starts the next
// entry of its array.
func resolve(index map[string]int, parts []string, array bool) string {
	path := ""
	for i, p := range parts {
		if path != "" {
			path += "."
		}
		path += p
		if array && i == len(parts)-1 {
			next := 0
			if cur, ok := index[path]; ok {
				next = cur + 1
			}
			index[path] = next
			// A new entry starts afresh: forget the indexes below it.
			for k := range index {
				if strings.HasPrefix(k, path+"[") {
					delete(index, k)
				}
			}
			return fmt.Sprintf("%s[%d]", path, next)
		}
		if cur, ok := index[path]; ok {
			path = fmt.Sprintf("%s[%d]", path, cur)
		}
	}
	return path
}

// splitKey splits a dotted TOML key and unquotes its parts.
func splitKey(k string) []string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return parts
}

// line returns the line of path, or of the nearest enclosing place that
// has one; 0 if none does.
func (p positions) line(path string) int {
	for path != "" {
		if n, ok := p[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// withoutIndexes drops the [n] of each array of tables from a path, as
// the toml package's keys have none.
func withoutIndexes(path string) string {
	return indexRE.ReplaceAllString(path, "")
}

var indexRE = regexp.MustCompile(`\[\d+\]`)
