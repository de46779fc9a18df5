package config

import (
	"crypto/rand"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/buildslave/buildslave/slave"
)

// durationRule says which durations a key takes.
type durationRule int

const (
	positive    durationRule = iota // > 0
	nonNegative                     // >= 0
	anySign                         // negative too: build_wait_timeout's "keep"
	orNone                          // > 0, or "none": the seed's None
)

// duration parses a duration key of the entry; def is its value when the
// key is absent.
func (e entry) duration(field string, d Duration, def time.Duration, rule durationRule) time.Duration {
	if d.raw == nil {
		return def
	}
	s, ok := d.raw.(string)
	if !ok {
		e.add(field, "want a duration string such as \"10m\" or \"1h30m\", got %v", d.raw)
		return def
	}
	if rule == orNone && strings.EqualFold(s, "none") {
		return slave.Disabled
	}
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		e.add(field, "%q is not a duration (use a Go duration such as \"10m\" or \"1h30m\")", s)
		return def
	case v <= 0 && (rule == positive || rule == orNone):
		hint := ""
		if rule == orNone {
			hint = ` (use "none" to turn it off)`
		}
		e.add(field, "must be positive, got %s%s", s, hint)
		return def
	case v < 0 && rule == nonNegative:
		e.add(field, "must not be negative, got %s", s)
		return def
	}
	return v
}

// sizeRE matches a size string: a number of bytes and an optional unit.
var sizeRE = regexp.MustCompile(`^(\d+)\s*([KMGT]i?B|B)?$`)

// sizeUnits are the units of a size string, binary and decimal.
var sizeUnits = map[string]int64{"": 1, "B": 1,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
	"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}

// size parses a size key of the entry, which must be positive; def is its
// value when the key is absent.
func (e entry) size(field string, s Size, def int64) int64 {
	switch v := s.raw.(type) {
	case nil:
		return def
	case int64:
		if v <= 0 {
			e.add(field, "must be positive, got %d", v)
			return def
		}
		return v
	case string:
		m := sizeRE.FindStringSubmatch(v)
		if m == nil {
			break
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		unit := sizeUnits[m[2]]
		switch {
		case err != nil || n > math.MaxInt64/unit:
			e.add(field, "%q is too large", v)
			return def
		case n == 0:
			e.add(field, "must be positive, got %q", v)
			return def
		}
		return n * unit
	}
	e.add(field, `want a size such as 65536, "64KiB" or "1GiB", got %#v`, s.raw)
	return def
}

// strings returns a key that takes one string or a list of strings.
func (e entry) strings(field string, s Strings) []string {
	switch v := s.raw.(type) {
	case nil:
		return nil
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			str, ok := x.(string)
			if !ok {
				e.add(field, "want a string or a list of strings, got %v", s.raw)
				return nil
			}
			out = append(out, str)
		}
		return out
	}
	e.add(field, "want a string or a list of strings, got %v", s.raw)
	return nil
}

// secret returns the password that sec gives: in the file, in a file or
// in an environment variable. With none of them it returns "" and, if
// required, records the problem.
func (e entry) secret(sec Secret, field string, required bool, ctx *parseContext) string {
	given := 0
	for _, v := range []string{sec.Password, sec.PasswordFile, sec.PasswordEnv} {
		if v != "" {
			given++
		}
	}
	switch {
	case given > 1:
		e.add(field, "give one of %s, %s_file and %s_env, not %d", field, field, field, given)
		return ""
	case sec.Password != "":
		return sec.Password
	case sec.PasswordFile != "":
		b, err := os.ReadFile(ctx.path(sec.PasswordFile))
		if err != nil {
			e.add(field+"_file", "%v", err)
			return ""
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			e.add(field+"_file", "%s is empty", sec.PasswordFile)
		}
		return pw
	case sec.PasswordEnv != "":
		pw, ok := ctx.lookup(sec.PasswordEnv)
		if !ok || pw == "" {
			e.add(field+"_env", "the environment variable %s is not set", sec.PasswordEnv)
		}
		return pw
	case required:
		e.add(field, "missing: give %s, %s_file or %s_env", field, field, field)
	}
	return ""
}

// randomPassword is the password of a latent slave that configures none:
// its instances log in with the per-start password anyway.
func randomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// parseContext is what resolving a file's values needs beyond the file.
type parseContext struct {
	dir    string // relative paths are relative to the file's directory
	lookup func(string) (string, bool)
}

// path resolves a path of the file.
func (c *parseContext) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// positive returns an integer key that must be positive when given; def
// is its value when it is absent (0).
func (e entry) positive(field string, n, def int) int {
	switch {
	case n < 0:
		e.add(field, "must be positive, got %d", n)
	case n > 0:
		return n
	}
	return def
}

// nonNegative checks an integer key.
func (e entry) nonNegative(field string, n int) {
	if n < 0 {
		e.add(field, "must not be negative, got %d", n)
	}
}

// oneOf checks a string key against its allowed values.
func (e entry) oneOf(field, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	e.add(field, "%q is not one of %s", v, strings.Join(allowed, ", "))
}
