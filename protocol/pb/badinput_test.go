package pb

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Each test here is a peer that misbehaves against a real Server on
// loopback: the master logs one clear line about it, closes that
// connection only, and meanwhile another slave attaches and the slaves
// attached before stay attached.

// badCase runs misbehave on a raw connection while good slaves come and
// stay, then checks that the master closed that connection and logged
// exactly one line about it holding every one of wantLog, which it
// returns.
func badCase(t *testing.T, tm *testMaster, misbehave func(p *rawPeer), wantLog ...string) string {
	t.Helper()
	before := tm.attach("good1")
	p := tm.dialRaw()
	during := tm.attach("good2") // attaches while the bad connection is open
	misbehave(p)
	p.closed()
	line := tm.waitLog(append([]string{"remote=" + p.addr() + " "}, wantLog...)...)
	tm.alive(before)
	tm.alive(during)
	after := tm.attach("good3")
	tm.alive(after)
	if lines := tm.warningsAbout(p.addr()); len(lines) != 1 {
		t.Errorf("%d warnings about the bad connection, want 1:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if strings.Contains(tm.logs.String(), "pw-") {
		t.Errorf("a password was logged:\n%s", tm.logs.String())
	}
	return line
}

func TestBadLoginUnknownName(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		challenge, challenger := p.login("nobody")
		_, err := p.answer(p.respond(challenge, challenger, "pw-nobody"), nil)
		if re, ok := err.(*RemoteError); !ok || re.Type != "twisted.cred.error.UnauthorizedLogin" {
			t.Errorf("respond answered %v", err)
		}
	}, "slave connection refused", "slave=nobody", "unknown slave name")
}

func TestBadLoginWrongPassword(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		challenge, challenger := p.login("bad")
		_, err := p.answer(p.respond(challenge, challenger, "pw-wrong"), nil)
		if re, ok := err.(*RemoteError); !ok || re.Type != "twisted.cred.error.UnauthorizedLogin" {
			t.Errorf("respond answered %v", err)
		}
	}, "slave connection refused", "slave=bad", "wrong password")
}

func TestBadLoginNoAnswerToChallenge(t *testing.T) {
	tm := newTestMaster(t, func(s *Server) { s.LoginTimeout = 200 * time.Millisecond })
	badCase(t, tm, func(p *rawPeer) {
		p.login("bad") // and never respond
	}, "slave attach failed", "no login within 200ms")
}

func TestBadLoginSilentConnection(t *testing.T) {
	tm := newTestMaster(t, func(s *Server) { s.LoginTimeout = 200 * time.Millisecond })
	p := tm.dialRawNoHandshake() // never even chooses a dialect
	good := tm.attach("good1")
	p.closed()
	tm.waitLog("remote="+p.addr()+" ", "slave attach failed", "no login within 200ms")
	tm.alive(good)
}

// handMade builds the bytes of a message by hand.
func handMade(build func(w *writer)) []byte {
	w := writer{vocab: true}
	build(&w)
	return w.b
}

func TestBadBananaStringOverSizeLimit(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("message")
			w.number(SizeLimit+1, tokString) // and none of its bytes
		}))
	}, "slave sent bad input", fmt.Sprintf("string of %d bytes is over banana's limit", SizeLimit+1))
}

func TestBadBananaListOverSizeLimit(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("message")
			w.list(SizeLimit + 2)
			w.atom("list")
		}))
	}, "slave sent bad input", fmt.Sprintf("list of %d elements is over banana's limit", SizeLimit+1))
}

func TestBadBananaDictionaryOverSizeLimit(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("message")
			w.list(SizeLimit + 2)
			w.atom("dictionary")
		}))
	}, "slave sent bad input", fmt.Sprintf("dictionary of %d entries is over banana's limit", SizeLimit+1))
}

func TestBadBananaStringOverMaxMessageBytes(t *testing.T) {
	tm := newTestMaster(t, func(s *Server) { s.Broker.Limits.MaxMessageBytes = 64 << 10 })
	badCase(t, tm, func(p *rawPeer) {
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("message")
			w.number(100<<10, tokString)
		}))
	}, "slave sent bad input", "string of 102400 bytes makes the message longer than 65536 bytes")
}

func TestBadBananaMessageOverMaxMessageBytes(t *testing.T) {
	tm := newTestMaster(t, func(s *Server) { s.Broker.Limits.MaxMessageBytes = 64 << 10 })
	badCase(t, tm, func(p *rawPeer) {
		// A list of short strings, each within the limit, the whole over it.
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("message")
			w.list(1001)
			w.atom("list")
			for range 1000 {
				w.atom(strings.Repeat("s", 100))
			}
		}))
	}, "slave sent bad input", "message longer than 65536 bytes")
}

func TestBadBananaPrefixTooLong(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.write(append(bytes.Repeat([]byte{0}, 65), tokInt))
	}, "slave sent bad input", "more than 64 digits of prefix")
}

func TestBadBananaNumberOver64Bits(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("version")
			w.b = append(w.b, bytes.Repeat([]byte{0x7f}, 10)...)
			w.b = append(w.b, tokLongInt)
		}))
	}, "slave sent bad input", "number does not fit 64 bits")
}

func TestBadBananaUnknownTypeByte(t *testing.T) {
	for _, typ := range []byte{0x88, 0x8f, 0xff} {
		t.Run(fmt.Sprintf("0x%02x", typ), func(t *testing.T) {
			tm := newTestMaster(t, nil)
			badCase(t, tm, func(p *rawPeer) {
				p.write(handMade(func(w *writer) {
					w.list(2)
					w.atom("message")
					w.number(1, typ)
				}))
			}, "slave sent bad input", fmt.Sprintf("unknown type byte 0x%02x", typ))
		})
	}
	t.Run("message", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			p.write([]byte{1, 0x8f})
		}, "slave sent bad input", "message is not a list (type byte 0x8f)")
	})
	t.Run("vocabulary", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			p.write(handMade(func(w *writer) {
				w.list(2)
				w.number(99, tokVocab)
			}))
		}, "slave sent bad input", "unknown vocabulary index 99")
	})
}

// jellyOf writes a jelly list of atoms by hand: [tag, more...].
func jellyOf(w *writer, tag string, more ...string) {
	w.list(1 + len(more))
	w.atom(tag)
	for _, s := range more {
		w.atom(s)
	}
}

func TestBadJellyNamesAClass(t *testing.T) {
	for _, c := range []struct {
		name string
		obj  func(w *writer)
	}{
		{"class", func(w *writer) { jellyOf(w, "class", "os.system") }},
		{"module", func(w *writer) { jellyOf(w, "module", "os") }},
		{"function", func(w *writer) { jellyOf(w, "function", "os.system") }},
		{"instance", func(w *writer) {
			w.list(3)
			w.atom("instance")
			jellyOf(w, "class", "subprocess.Popen")
			w.list(1)
			w.atom("dictionary")
		}},
		{"copy", func(w *writer) { // a Copyable: its class name, then its state
			w.list(2)
			w.atom("buildbot.process.properties.Properties")
			w.list(1)
			w.atom("dictionary")
		}},
		{"persistent", func(w *writer) { jellyOf(w, "persistent", "1") }},
		{"unpersistable", func(w *writer) { jellyOf(w, "unpersistable", "x") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tm := newTestMaster(t, nil)
			tag := c.name
			if c.name == "copy" {
				tag = "buildbot.process.properties.Properties"
			}
			badCase(t, tm, func(p *rawPeer) {
				// As the argument of the login, before any login.
				p.write(handMade(func(w *writer) {
					w.list(7)
					w.atom("message")
					w.int(1)
					w.atom("root")
					w.atom("login")
					w.int(1)
					w.list(2)
					w.atom("tuple")
					c.obj(w)
					w.list(1)
					w.atom("dictionary")
				}))
			}, "slave sent bad input", fmt.Sprintf("jelly of type %q is refused", tag))
		})
	}
	t.Run("after attaching", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			perspective := p.attach("bad")
			p.write(handMade(func(w *writer) {
				w.list(7)
				w.atom("message")
				w.int(10)
				w.int(perspective)
				w.atom("keepalive")
				w.int(1)
				w.list(2)
				w.atom("tuple")
				jellyOf(w, "class", "os.system")
				w.list(1)
				w.atom("dictionary")
			}))
		}, "slave=bad", "slave sent bad input", `jelly of type "class" is refused`)
	})
}

func TestBadJellyDeepNesting(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("message")
			for range DefaultMaxDepth + 1 {
				w.list(2)
				w.atom("list")
			}
			w.int(1)
		}))
	}, "slave sent bad input", fmt.Sprintf("lists nested deeper than %d", DefaultMaxDepth))
}

func TestBadJellyDeepNestingInDictionaries(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.write(handMade(func(w *writer) {
			w.list(2)
			w.atom("message")
			for range DefaultMaxDepth + 1 {
				w.list(2)
				w.atom("dictionary")
				w.list(2)
				w.atom("k")
			}
			w.int(1)
		}))
	}, "slave sent bad input", fmt.Sprintf("lists nested deeper than %d", DefaultMaxDepth))
}

func TestBadJellyReferences(t *testing.T) {
	t.Run("dereference of nothing", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			p.write(handMade(func(w *writer) {
				w.list(2)
				w.atom("message")
				w.list(2)
				w.atom("dereference")
				w.int(7)
			}))
		}, "slave sent bad input", "dereference of unknown reference 7")
	})
	t.Run("reference to itself", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			p.write(handMade(func(w *writer) {
				w.list(2)
				w.atom("message")
				w.list(3)
				w.atom("reference")
				w.int(1)
				w.list(2)
				w.atom("list")
				w.list(2)
				w.atom("dereference")
				w.int(1)
			}))
		}, "slave sent bad input", "reference 1 refers to itself")
	})
}

func TestBadCallOnObjectNeverGiven(t *testing.T) {
	t.Run("before login", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			p.call(int64(1), "respond", []byte("x"), goldenObject{1})
		}, "slave sent bad input", `call of "respond" on object 1, which the peer does not hold`)
	})
	t.Run("after attaching", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			p.attach("bad")
			p.call(int64(999), "keepalive")
		}, "slave=bad", "slave sent bad input", `call of "keepalive" on object 999, which the peer does not hold`)
	})
	t.Run("a name", func(t *testing.T) {
		tm := newTestMaster(t, nil)
		badCase(t, tm, func(p *rawPeer) {
			p.call([]byte("perspective"), "keepalive")
		}, "slave sent bad input", `call of "keepalive" on object "perspective", which the peer does not hold`)
	})
}

func TestBadCallAfterDecref(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		perspective := p.attach("bad")
		if _, err := p.answer(p.call(perspective, "keepalive"), nil); err != nil {
			t.Errorf("keepalive before the decref: %v", err)
		}
		p.send("decref", perspective)
		p.call(perspective, "keepalive")
	}, "slave=bad", "slave sent bad input", `call of "keepalive" on object`, "which the peer does not hold")
}

func TestBadDecrefOfUnknownObject(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.attach("bad")
		p.send("decref", 999)
	}, "slave=bad", "slave sent bad input", "decref of object 999, which the peer does not hold")
}

func TestBadAnswerToUnknownRequest(t *testing.T) {
	for _, cmd := range []string{"answer", "error"} {
		t.Run(cmd, func(t *testing.T) {
			tm := newTestMaster(t, nil)
			badCase(t, tm, func(p *rawPeer) {
				p.attach("bad")
				p.send(cmd, 999, nil)
			}, "slave=bad", "slave sent bad input", cmd+" to request 999, which is not waiting")
		})
	}
}

func TestBadUnknownCommand(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		p.send("cachemessage", 1, 2)
	}, "slave sent bad input", `unsupported PB command "cachemessage"`)
}

// TestBadSilentMidAttach logs a slave in that never answers the attach
// sequence's first call: other slaves attach meanwhile, and the silent
// one is dropped at the step's deadline.
func TestBadSilentMidAttach(t *testing.T) {
	tm := newTestMaster(t, func(s *Server) { s.StepTimeout = 3 * time.Second })
	before := tm.attach("good1")
	p := tm.dialRaw()
	challenge, challenger := p.login("bad")
	p.respond(challenge, challenger, "pw-bad")
	if msg, err := p.read(); err != nil || len(msg) != 7 || text(msg[3]) != "print" {
		t.Fatalf("the master's first call: %v, %v", msg, err)
	}
	// The master waits for the print's answer; others attach meanwhile,
	// not after the silent one is dropped.
	during := tm.attach("good2")
	if !p.open() {
		t.Error("another slave attached only once the silent one was dropped")
	}
	if st, _ := tm.m.State("bad"); st.Attached {
		t.Error("the silent slave is attached")
	}
	p.closed()
	tm.waitLog("remote="+p.addr()+" ", "slave=bad", "slave attach failed", `print "attached": no answer within 3s`)
	tm.alive(before)
	tm.alive(during)
	tm.alive(tm.attach("good3"))
	if lines := tm.warningsAbout(p.addr()); len(lines) != 1 {
		t.Errorf("%d warnings about the silent slave, want 1:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// TestBadManySilentMidAttach: ten slaves silent mid-attach at once do not
// delay another slave's attach; they are dropped at the step's deadline.
func TestBadManySilentMidAttach(t *testing.T) {
	names := []string{"good1"}
	for i := range 10 {
		names = append(names, fmt.Sprintf("bad%d", i))
	}
	tm := newTestMasterOf(t, names, func(s *Server) { s.StepTimeout = 3 * time.Second })
	var silent []*rawPeer
	for _, name := range names[1:] { // one name each: a name attaches once at a time
		p := tm.dialRaw()
		challenge, challenger := p.login(name)
		p.respond(challenge, challenger, "pw-"+name)
		silent = append(silent, p)
	}
	for _, p := range silent {
		if msg, err := p.read(); err != nil || len(msg) != 7 || text(msg[3]) != "print" {
			t.Fatalf("the master's first call: %v, %v", msg, err)
		}
	}
	g := tm.attach("good1")
	for _, p := range silent {
		if !p.open() {
			t.Fatal("a slave attached only once the silent ones were dropped")
		}
	}
	tm.alive(g)
	for _, p := range silent {
		p.closed()
	}
}

// TestBadWorkerInfoOfSharedReferences answers getWorkerInfo with one list
// of 5,000 strings and then thousands of dereferences of it: cheap to
// send and to decode, but the master copies the info (Plain, ParseInfo),
// each dereference anew. The decoder charges each dereference what its
// value cost, so the answer is refused instead of copied a billion times.
func TestBadWorkerInfoOfSharedReferences(t *testing.T) {
	tm := newTestMaster(t, nil)
	badCase(t, tm, func(p *rawPeer) {
		challenge, challenger := p.login("bad")
		p.respond(challenge, challenger, "pw-bad")
		for {
			msg, err := p.read()
			if err != nil {
				t.Fatalf("waiting for getWorkerInfo: %v", err)
			}
			if text(msg[3]) == "print" {
				p.send("answer", msg[1], nil)
				continue
			}
			if text(msg[3]) != "getWorkerInfo" {
				t.Fatalf("the master called %v", msg)
			}
			const derefs = 150000
			p.write(handMade(func(w *writer) {
				w.list(3)
				w.atom("answer")
				w.int(msg[1].(int64))
				w.list(derefs + 2)
				w.atom("dictionary")
				w.list(2)
				w.atom("shared")
				w.list(3)
				w.atom("reference")
				w.int(1)
				w.list(5001)
				w.atom("list")
				for range 5000 {
					w.list(2)
					w.atom("unicode")
					w.atom("abcdefgh")
				}
				for i := range derefs {
					w.list(2)
					w.bytes(fmt.Appendf(nil, "%x", i))
					w.list(2)
					w.atom("dereference")
					w.int(1)
				}
			}))
			return
		}
	}, "slave=bad", "slave sent bad input", "decoding would take more than 8 bytes per byte read")
}
