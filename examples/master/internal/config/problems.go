package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/BurntSushi/toml"

	"github.com/buildslave/buildslave/slave"
)

// Problem is one thing wrong with a configuration file, at a line when one
// is known: `master.toml:12: slaves[1] "bot2": max_builds: must not be
// negative`.
type Problem struct {
	File  string
	Line  int    // 0 when unknown
	Where string // the table entry, e.g. `slaves[1] "bot2"`; "" for the file
	Field string // the key, e.g. "max_builds"; "" for the entry itself
	Msg   string
}

func (p *Problem) Error() string {
	s := p.File
	if p.Line > 0 {
		s += ":" + strconv.Itoa(p.Line)
	}
	s += ": "
	if p.Where != "" {
		s += p.Where + ": "
	}
	if p.Field != "" {
		s += p.Field + ": "
	}
	return s + p.Msg
}

// problems collects a file's problems, locating each by its path.
type problems struct {
	file string
	pos  positions
	list []error
}

// entry names one table of the file for problems: path is where it is
// (`slaves[1]`), where what the messages call it (`slaves[1] "bot2"`).
type entry struct {
	p     *problems
	path  string
	where string
}

// entry returns the table at path, named after its name key if it has one.
func (p *problems) entry(path, name string) entry {
	where := path
	if name != "" {
		where += " " + strconv.Quote(name)
	}
	return entry{p: p, path: path, where: where}
}

// add records a problem with field (a key of the entry, or "").
func (e entry) add(field, format string, args ...any) {
	path := e.path
	if field != "" {
		path += "." + field
	}
	e.p.list = append(e.p.list, &Problem{File: e.p.file, Line: e.p.pos.line(path), Where: e.where, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// addErr records err; a library's *slave.ConfigError (alone or joined)
// becomes one problem per field it names, at that field's line under sub
// (the driver's sub-table) or the entry.
func (e entry) addErr(sub string, err error) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, err := range j.Unwrap() {
			e.addErr(sub, err)
		}
		return
	}
	var ce *slave.ConfigError
	if !errors.As(err, &ce) {
		e.add("", "%v", err)
		return
	}
	field := ce.Field
	if sub != "" {
		if _, ok := e.p.pos[e.path+"."+sub+"."+field]; ok {
			field = sub + "." + field
		}
	}
	e.add(field, "%s", ce.Reason)
}

// tomlLineRE matches the toml package's decode errors, which carry a line
// in their text rather than as a ParseError.
var tomlLineRE = regexp.MustCompile(`^toml: line (\d+) \(last key "[^"]*"\): (.*)$`)

// decodeError turns the toml package's error into a Problem at its line.
func decodeError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Problem{File: file, Line: pe.Position.Line, Msg: pe.Message}
	}
	if m := tomlLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Problem{File: file, Line: n, Msg: m[2]}
	}
	return &Problem{File: file, Msg: err.Error()}
}
