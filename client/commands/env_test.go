//go:build unix

package commands

import (
	"reflect"
	"testing"
)

func TestChildEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin:/bin", "PYTHONPATH=/lib/py", "HOME=/home/s", "DROP=x"}
	got, err := childEnv(base, map[string]any{
		"PATH":       []any{"/opt/bin", "${PATH}"},
		"PYTHONPATH": "/src",
		"DROP":       nil,
		"NEW":        "${HOME}/x ${UNSET}.",
	}, "/w")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"HOME=/home/s", "NEW=/home/s/x .", "PATH=/opt/bin:/usr/bin:/bin", "PWD=/w",
		"PYTHONPATH=/src:/lib/py"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if _, err := childEnv(base, map[string]any{"X": 3}, "/w"); err == nil {
		t.Error("a number was accepted as a value")
	}
}
