package commands

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"unicode"
)

// fsCmd is a file-system command on one or more absolute paths; do does the
// work and returns the updates to send before rc.
type fsCmd struct {
	name      string
	paths     []string
	keepGoing bool // after a failure, go on with the other paths
	do        func(path string) ([][2]any, error)
}

// run applies do to every path. A failure is reported as
// "name: strerror: path" in the header with rc set to its errno.
func (c *fsCmd) run(_ context.Context, j *job) error {
	rc := 0
	for _, p := range c.paths {
		pairs, err := c.do(p)
		if err != nil {
			j.out.header("%s: %s: %s\n", c.name, strerror(err), p)
			rc = errnoOf(err)
			if !c.keepGoing {
				break
			}
			continue
		}
		for _, kv := range pairs {
			j.out.send(kv[0].(string), kv[1])
		}
	}
	j.out.send("rc", rc)
	return nil
}

// pathsCmd makes the parser of a file-system command whose path or paths
// are the argument key.
func pathsCmd(name, key string, keepGoing bool, do func(string) ([][2]any, error)) func(argMap) (runner, error) {
	return func(a argMap) (runner, error) {
		if err := a.require(key); err != nil {
			return nil, err
		}
		paths, err := a.strings(key)
		if err != nil {
			return nil, err
		}
		return &fsCmd{name: name, paths: paths, keepGoing: keepGoing, do: do}, nil
	}
}

// The file-system commands; like the stock slave, only rmdir carries on
// after a failure.
var (
	parseMkdir   = pathsCmd("mkdir", "paths", false, mkdir)
	parseRmdir   = pathsCmd("rmdir", "paths", true, rmdir)
	parseListdir = pathsCmd("listdir", "path", false, listdir)
	parseStat    = pathsCmd("stat", "path", false, statPath)
	parseGlob    = pathsCmd("glob", "path", false, globCmd)
	parseRmfile  = pathsCmd("rmfile", "path", false, rmfile)
)

func mkdir(path string) ([][2]any, error) {
	return nil, os.MkdirAll(path, 0o777)
}

// rmdir removes path and everything below it; if that fails it makes
// every directory below writable and tries once more.
func rmdir(path string) ([][2]any, error) {
	err := os.RemoveAll(path)
	if err == nil {
		return nil, nil
	}
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return nil, os.RemoveAll(path)
}

func listdir(path string) ([][2]any, error) {
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	names := make([]any, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return [][2]any{{"files", names}}, nil
}

func globCmd(pattern string) ([][2]any, error) {
	matches := glob(pattern)
	files := make([]any, len(matches))
	for i, m := range matches {
		files[i] = m
	}
	return [][2]any{{"files", files}}, nil
}

// rmfile removes a file (never a directory, like Python's os.remove).
func rmfile(path string) ([][2]any, error) {
	if err := syscall.Unlink(path); err != nil {
		return nil, &fs.PathError{Op: "remove", Path: path, Err: err}
	}
	return nil, nil
}

// errnoOf is the rc for a failed file-system call: its errno, or 1.
func errnoOf(err error) int {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return int(errno)
	}
	return 1
}

// strerror is the C library's text for err's errno ("No such file or
// directory"), or err itself.
func strerror(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	s := []rune(errno.Error())
	s[0] = unicode.ToUpper(s[0])
	return string(s)
}
