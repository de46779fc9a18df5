package remote

import (
	"fmt"
	"reflect"
	"testing"
)

func TestInternSharesEqualMapsWithinABound(t *testing.T) {
	in := interner{maps: make(map[string]map[string]string)}
	a := in.intern(map[string]string{"shell": "3.1", "mkdir": "3.1"})
	b := in.intern(map[string]string{"mkdir": "3.1", "shell": "3.1"})
	if reflect.ValueOf(a).UnsafePointer() != reflect.ValueOf(b).UnsafePointer() {
		t.Error("equal maps are not shared")
	}
	c := in.intern(map[string]string{"shell": "3.0", "mkdir": "3.1"})
	if c["shell"] != "3.0" {
		t.Errorf("a different map came back as %v", c)
	}
	// A slave cannot make its map stand for another's by packing
	// separators into a value.
	d := in.intern(map[string]string{"a": "1:b1:c"})
	e := in.intern(map[string]string{"a": "", "b": "c"})
	f := in.intern(map[string]string{"a": "b\x00c\x00d"})
	g := in.intern(map[string]string{"a": "b", "c": "d"})
	if len(d) != 1 || len(e) != 2 || len(f) != 1 || len(g) != 2 {
		t.Errorf("maps that encode alike were confused: %v %v %v %v", d, e, f, g)
	}
	for i := range 2 * maxShared {
		in.intern(map[string]string{"version": fmt.Sprint(i)})
	}
	if len(in.maps) != maxShared {
		t.Errorf("interner holds %d maps, want at most %d", len(in.maps), maxShared)
	}
}
