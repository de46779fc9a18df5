package stacks

import (
	"strings"
	"testing"
)

func parkedHere(c chan struct{}) { <-c }

// TestAwaitFindsAParkedGoroutine: a goroutine blocked in parkedHere is
// the one stack holding that name, and it shows where it waits.
func TestAwaitFindsAParkedGoroutine(t *testing.T) {
	c := make(chan struct{})
	defer close(c)
	go parkedHere(c)
	found := Await("stacks.parkedHere", "chan receive")
	if len(found) != 1 || !strings.Contains(found[0], "chan receive") {
		t.Fatalf("found %q", found)
	}
	if got := Containing("no goroutine holds this"); len(got) != 0 {
		t.Errorf("Containing found %q", got)
	}
}
