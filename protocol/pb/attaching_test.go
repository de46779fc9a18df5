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

// TestLastPrintTravelsWithTheLoginAnswer: the attach's last print
// "attached" comes just before the answer to the slave's login (in one
// write), and the master does not wait for the print's answer to send it:
// a slave that answers it late is attached all the same.
func TestLastPrintTravelsWithTheLoginAnswer(t *testing.T) {
	tm := newTestMaster(t, nil)
	p := tm.dialRaw()
	challenge, challenger := p.login("good1")
	prints := 0
	var last []any
	v, err := p.answer(p.respond(challenge, challenger, "pw-good1"), func(msg []any) bool {
		if len(msg) == 7 && text(msg[3]) == "print" {
			if prints++; prints == 2 {
				last = msg // left unanswered until the login is answered
				return true
			}
		}
		return p.serveAttach(msg)
	})
	if _, ok := v.(*Ref); err != nil || !ok {
		t.Fatalf("respond answered %v, %v", v, err)
	}
	if last == nil {
		t.Fatal(`no second print "attached" came before the login's answer`)
	}
	p.send("answer", last[1], nil)
	if st, _ := tm.m.State("good1"); !st.Attached {
		t.Error("good1 is not attached")
	}
	if !p.open() {
		t.Error("the master closed the connection after the late answer")
	}
}
