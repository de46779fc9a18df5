package commands

import (
	"fmt"
	"math"
	"time"
)

// argMap reads the loosely typed args of a start_command request, as a
// msgpack decoder hands them over (any integer or float type, str or bin).
type argMap map[string]any

func (a argMap) require(keys ...string) error {
	for _, k := range keys {
		if _, ok := a[k]; !ok {
			return fmt.Errorf("missing argument %q", k)
		}
	}
	return nil
}

func (a argMap) string(key, def string) (string, error) {
	v, ok := a[key]
	if !ok || v == nil {
		return def, nil
	}
	s, ok := asString(v)
	if !ok {
		return "", fmt.Errorf("argument %q: want a string, got %T", key, v)
	}
	return s, nil
}

func (a argMap) bool(key string, def bool) (bool, error) {
	v, ok := a[key]
	if !ok || v == nil {
		return def, nil
	}
	if b, ok := v.(bool); ok {
		return b, nil
	}
	if n, ok := asFloat(v); ok {
		return n != 0, nil
	}
	return false, fmt.Errorf("argument %q: want a boolean, got %T", key, v)
}

// int reads an integer argument; nil or absent gives def.
func (a argMap) int(key string, def int) (int, error) {
	v, ok := a[key]
	if !ok || v == nil {
		return def, nil
	}
	f, ok := asFloat(v)
	if !ok || f != math.Trunc(f) {
		return 0, fmt.Errorf("argument %q: want an integer, got %v", key, v)
	}
	if f < math.MinInt64 || f >= math.MaxInt64 { // beyond, int(f) is undefined
		return 0, fmt.Errorf("argument %q: %v is out of range", key, v)
	}
	return int(f), nil
}

// seconds reads a duration given in seconds; nil or absent gives 0 (none).
func (a argMap) seconds(key string) (time.Duration, error) {
	v, ok := a[key]
	if !ok || v == nil {
		return 0, nil
	}
	f, ok := asFloat(v)
	if !ok || f < 0 {
		return 0, fmt.Errorf("argument %q: want a number of seconds, got %v", key, v)
	}
	if f >= math.MaxInt64/float64(time.Second) {
		return 0, fmt.Errorf("argument %q: %v seconds is out of range", key, v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

func (a argMap) strings(key string) ([]string, error) {
	list, ok := a[key].([]any)
	if !ok {
		if s, ok := asString(a[key]); ok {
			return []string{s}, nil
		}
		return nil, fmt.Errorf("argument %q: want a list of strings, got %T", key, a[key])
	}
	out := make([]string, len(list))
	for i, v := range list {
		s, ok := asString(v)
		if !ok {
			return nil, fmt.Errorf("argument %q: item %d is %T, not a string", key, i, v)
		}
		out[i] = s
	}
	return out, nil
}

func asString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

func asFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int8:
		return float64(n), true
	case int16:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint8:
		return float64(n), true
	case uint16:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float32:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
