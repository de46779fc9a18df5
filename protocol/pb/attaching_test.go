package pb

import (
	"errors"
	"testing"
)

// TestOneConnectionPerNamePastLogin: while one connection of a name is
// logged in and attaching (it never answers the attach sequence), a second
// login under the name is refused; once the first is gone, the name
// attaches.
func TestOneConnectionPerNamePastLogin(t *testing.T) {
	tm := newTestMaster(t, nil)
	silent := tm.dialRaw()
	challenge, challenger := silent.login("good1")
	silent.respond(challenge, challenger, "pw-good1")
	if _, err := silent.read(); err != nil { // the attach's print, never answered
		t.Fatal(err)
	}
	_, err := tm.tryAttach("good1", "pw-good1")
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("second login while the first attaches: %v, want refused", err)
	}
	tm.waitLog("attaching")
	silent.nc.Close()
	tm.waitLog("attach failed", "remote="+silent.addr())
	tm.attach("good1")
}
