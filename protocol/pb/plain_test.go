package pb

import (
	"reflect"
	"testing"
)

// TestPlainCopiesOnlyWhatItTurns: a dictionary of text (what a Buildbot
// 3.x worker sends) is returned as it is; one holding bytes or tuples is
// copied with them turned, and the original is left alone.
func TestPlainCopiesOnlyWhatItTurns(t *testing.T) {
	text := map[string]any{"admin": "me", "numcpus": int64(2), "environ": map[string]any{"PATH": "/bin"}, "list": []any{"a"}}
	if p := Plain(text).(map[string]any); reflect.ValueOf(p).Pointer() != reflect.ValueOf(text).Pointer() {
		t.Error("Plain copied a dictionary with nothing to turn")
	}

	inner := []any{[]byte("x"), "y"}
	old := map[string]any{"admin": []byte("me"), "list": inner, "t": Tuple{"a"}, "same": "s"}
	want := map[string]any{"admin": "me", "list": []any{"x", "y"}, "t": []any{"a"}, "same": "s"}
	if p := Plain(old); !reflect.DeepEqual(p, want) {
		t.Errorf("Plain = %#v, want %#v", p, want)
	}
	if _, ok := old["admin"].([]byte); !ok || !reflect.DeepEqual(inner, []any{[]byte("x"), "y"}) {
		t.Errorf("Plain changed its argument: %#v", old)
	}
}
