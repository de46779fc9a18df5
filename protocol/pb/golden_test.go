package pb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/remote"
)

// The captures in testdata are real traffic between the stock Buildbot 3.7
// master and buildbot-worker 3.7 (testdata/README.md says how they were
// made). Each line is "S>M TIME HEX" (slave to master) or "M>S TIME HEX",
// one chunk as the relay read it; "# connection N" starts a connection.

// goldenCaptures are the captures' names: testdata/capture-NAME.txt.
var goldenCaptures = []string{"build", "badpassword", "keepalive", "interrupt"}

// goldenConn is the bytes each side sent on one captured connection.
type goldenConn struct {
	toMaster, toSlave []byte
}

// readCapture reads testdata/capture-NAME.txt.
func readCapture(t testing.TB, name string) []goldenConn {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "capture-"+name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	var conns []goldenConn
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.HasPrefix(line, "# connection") {
			conns = append(conns, goldenConn{})
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || len(conns) == 0 {
			t.Fatalf("capture-%s.txt:%d: not a chunk line: %q", name, i+1, line)
		}
		chunk, err := hex.DecodeString(f[2])
		if err != nil {
			t.Fatalf("capture-%s.txt:%d: %v", name, i+1, err)
		}
		c := &conns[len(conns)-1]
		switch f[0] {
		case "S>M":
			c.toMaster = append(c.toMaster, chunk...)
		case "M>S":
			c.toSlave = append(c.toSlave, chunk...)
		default:
			t.Fatalf("capture-%s.txt:%d: direction %q", name, i+1, f[0])
		}
	}
	return conns
}

// goldenMessage is one PB message of a capture: its bytes and its values.
type goldenMessage struct {
	raw []byte
	msg []any
}

// goldenRefs resolves the references of captured messages: a "remote" is
// a *Ref with the sender's number; a "local" one is not expected.
type goldenRefs struct{}

func (goldenRefs) remoteRef(id int64) (*Ref, error) { return &Ref{id: id}, nil }
func (goldenRefs) localObject(id int64) (Object, error) {
	return nil, fmt.Errorf("%w: local object %d in a capture", ErrMalformed, id)
}

// newGoldenDecoder decodes src within lim.
func newGoldenDecoder(src io.Reader, lim Limits) *decoder {
	return &decoder{reader: newReader(src, lim, budget.Reservation{}), res: goldenRefs{}, refs: map[int64]any{}}
}

// splitStream decodes one direction of a connection: banana's dialect
// negotiation (the master's offer, or the slave's choice), then PB
// messages until the stream ends. It returns the negotiation's bytes and
// each message with its own bytes.
func splitStream(stream []byte, fromMaster bool) (dialect []byte, msgs []goldenMessage, err error) {
	d := newGoldenDecoder(bytes.NewReader(stream), Limits{})
	d.begin()
	if fromMaster {
		n, typ, err := d.token()
		if err != nil {
			return nil, nil, err
		}
		if typ != tokList {
			return nil, nil, fmt.Errorf("dialect offer is type 0x%02x", typ)
		}
		for range n {
			if _, err := d.atom(); err != nil {
				return nil, nil, err
			}
		}
	} else if a, err := d.atom(); err != nil || string(a) != "pb" {
		return nil, nil, fmt.Errorf("dialect choice %q: %v", a, err)
	}
	off := d.read
	dialect = stream[:off]
	for {
		msg, err := d.message()
		if err == io.EOF && off == len(stream) {
			return dialect, msgs, nil
		}
		if err != nil {
			return dialect, msgs, fmt.Errorf("message %d (at byte %d): %w", len(msgs)+1, off, err)
		}
		msgs = append(msgs, goldenMessage{raw: stream[off : off+d.read], msg: msg})
		off += d.read
	}
}

// goldenStreams decodes both directions of every connection of a capture.
func goldenStreams(t testing.TB, name string) (toMaster, toSlave []goldenMessage) {
	t.Helper()
	for i, c := range readCapture(t, name) {
		_, m, err := splitStream(c.toMaster, false)
		if err != nil {
			t.Fatalf("capture %s, connection %d, slave to master: %v", name, i+1, err)
		}
		toMaster = append(toMaster, m...)
		_, s, err := splitStream(c.toSlave, true)
		if err != nil {
			t.Fatalf("capture %s, connection %d, master to slave: %v", name, i+1, err)
		}
		toSlave = append(toSlave, s...)
	}
	return toMaster, toSlave
}

// TestGoldenCapturesDecode decodes every message of every capture, both
// directions, and checks that each stream ends exactly after its last
// message.
func TestGoldenCapturesDecode(t *testing.T) {
	for _, name := range goldenCaptures {
		t.Run(name, func(t *testing.T) {
			toMaster, toSlave := goldenStreams(t, name)
			if len(toMaster) < 3 || len(toSlave) < 2 {
				t.Fatalf("only %d messages to the master and %d to the slave", len(toMaster), len(toSlave))
			}
			t.Logf("%d messages to the master, %d to the slave", len(toMaster), len(toSlave))
		})
	}
}

// findMessage returns the first message whose command and, for calls,
// method are as given ("" matches any), and fails if there is none.
func findMessage(t *testing.T, msgs []goldenMessage, match func(m []any) bool) goldenMessage {
	t.Helper()
	for _, m := range msgs {
		if match(m.msg) {
			return m
		}
	}
	t.Fatal("no such message in the capture")
	return goldenMessage{}
}

// callTo matches a "message" calling method.
func callTo(method string) func([]any) bool {
	return func(m []any) bool {
		return len(m) == 7 && text(m[0]) == "message" && text(m[3]) == method
	}
}

// answerTo matches the answer (or error) to request id.
func answerTo(cmd string, id int64) func([]any) bool {
	return func(m []any) bool { return len(m) == 3 && text(m[0]) == cmd && m[1] == id }
}

// refsToIDs replaces each *Ref in v by "ref N", so that values compare
// with reflect.DeepEqual.
func refsToIDs(v any) any {
	switch v := v.(type) {
	case *Ref:
		return fmt.Sprintf("ref %d", v.id)
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = refsToIDs(e)
		}
		return l
	case Tuple:
		return Tuple(refsToIDs([]any(v)).([]any))
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = refsToIDs(e)
		}
		return m
	}
	return v
}

func wantValue(t *testing.T, what string, got, want any) {
	t.Helper()
	if g := refsToIDs(got); !reflect.DeepEqual(g, want) {
		t.Errorf("%s:\n got %#v\nwant %#v", what, g, want)
	}
}

// TestGoldenValues checks the Go values of chosen messages of the stock
// peers: the login, the challenge and its response (PB's MD5, computed
// with the captured challenge and the worker's password), the worker's
// info, a command's start and updates, an interrupt, the worker's
// keepalives, and the master's refusal of a wrong password.
func TestGoldenValues(t *testing.T) {
	toMaster, toSlave := goldenStreams(t, "build")

	login := findMessage(t, toMaster, callTo("login"))
	wantValue(t, "login", login.msg, []any{[]byte("message"), int64(1), []byte("root"), []byte("login"), int64(1),
		Tuple{[]byte("stock")}, map[string]any{}})

	challenge := findMessage(t, toSlave, answerTo("answer", 1)).msg[2].(Tuple)
	if len(challenge) != 2 || len(challenge[0].([]byte)) != 16 || refsToIDs(challenge[1]) != "ref 1" {
		t.Fatalf("challenge = %v", challenge)
	}
	respond := findMessage(t, toMaster, callTo("respond"))
	wantValue(t, "respond", respond.msg, []any{[]byte("message"), int64(2), int64(1), []byte("respond"), int64(1),
		Tuple{Respond(challenge[0].([]byte), "stock-secret"), "ref 1"}, map[string]any{}})
	if !(md5Proof{challenge[0].([]byte), respond.msg[5].(Tuple)[0].([]byte)}).Proves("stock-secret") {
		t.Error("md5Proof does not accept the stock worker's response")
	}

	info := findMessage(t, toMaster, answerTo("answer", 2)).msg[2].(map[string]any)
	for k, want := range map[string]any{"admin": "Your Name Here <admin@youraddress.invalid>\n", "basedir": "/srv/bb/w",
		"system": "posix", "version": "3.7.0-2", "delete_leftover_dirs": int64(0),
		"environ": map[string]any{"PATH": "/usr/bin:/bin", "HOME": "/srv/bb/w", "LANG": "C.UTF-8"}} {
		wantValue(t, "getWorkerInfo's "+k, info[k], want)
	}
	parsed, err := remote.ParseInfo(Plain(info))
	if err != nil || parsed.Version != "3.7.0-2" || parsed.Basedir != "/srv/bb/w" || parsed.NumCPUs < 1 ||
		parsed.Commands["shell"] == "" || parsed.OS != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("ParseInfo = %+v, %v", parsed, err)
	}

	builders := findMessage(t, toSlave, callTo("setBuilderList"))
	wantValue(t, "setBuilderList", builders.msg[5], Tuple{[]any{Tuple{"hello", "hello"}}})
	wantValue(t, "setBuilderList's answer", findMessage(t, toMaster, answerTo("answer", 3)).msg[2],
		map[string]any{"hello": "ref 2"})

	start := findMessage(t, toSlave, callTo("startCommand"))
	args := start.msg[5].(Tuple)
	wantValue(t, "startCommand", args[:3], Tuple{"ref 3", "0", "shell"})
	shell := args[3].(map[string]any)
	for k, want := range map[string]any{"workdir": "build", "env": map[string]any{}, "want_stdout": true,
		"timeout": int64(1200), "maxTime": nil, "usePTY": false, "logEnviron": false, "logfiles": map[string]any{},
		"command": []any{"sh", "-c", "echo hello; echo oops >&2; mkdir -p dist/sub; echo artifact > dist/out.txt; echo x > dist/sub/y.txt; exit 3"}} {
		wantValue(t, "shell's "+k, shell[k], want)
	}

	stdout := findMessage(t, toMaster, func(m []any) bool {
		return callTo("update")(m) && strings.Contains(fmt.Sprint(m[5]), "stdout")
	})
	wantValue(t, "update", stdout.msg, []any{[]byte("message"), int64(4), int64(3), []byte("update"), int64(1),
		Tuple{[]any{[]any{map[string]any{"stdout": "hello\n"}, int64(0)}}}, map[string]any{}})
	updates, err := parseUpdates(stdout.msg[5].(Tuple)[0])
	if err != nil || len(updates) != 1 || updates[0].Key != "stdout" || updates[0].Text != "hello\n" {
		t.Errorf("parseUpdates = %+v, %v", updates, err)
	}
	rc := findMessage(t, toMaster, func(m []any) bool {
		return callTo("update")(m) && strings.Contains(fmt.Sprint(m[5]), "rc")
	})
	if updates, err := parseUpdates(rc.msg[5].(Tuple)[0]); err != nil || len(updates) != 1 || updates[0].RC != 3 {
		t.Errorf("rc update = %+v, %v", updates, err)
	}
	stat := findMessage(t, toMaster, func(m []any) bool {
		return callTo("update")(m) && strings.Contains(fmt.Sprint(m[5]), "stat")
	})
	if st := AsList(stat.msg[5].(Tuple)[0].([]any)[0].([]any)[0].(map[string]any)["stat"]); len(st) != 10 || st[6] != int64(17) {
		t.Errorf("stat update = %v", st)
	}
	wantValue(t, "complete", findMessage(t, toMaster, callTo("complete")).msg[5], Tuple{nil})
	read := findMessage(t, toSlave, func(m []any) bool { _, ok := m[len(m)-1].([]byte); return text(m[0]) == "answer" && ok })
	wantValue(t, "answer to read", read.msg[2], []byte("downloaded bytes\n"))

	_, toSlave = goldenStreams(t, "interrupt")
	wantValue(t, "interruptCommand", findMessage(t, toSlave, callTo("interruptCommand")).msg[5],
		Tuple{"0", "capture: stopped by the master"})

	toMaster, _ = goldenStreams(t, "keepalive")
	keepalives := 0
	for _, m := range toMaster {
		if callTo("keepalive")(m.msg) {
			keepalives++
			wantValue(t, "keepalive", m.msg[2:], []any{int64(2), []byte("keepalive"), int64(1), Tuple{}, map[string]any{}})
		}
	}
	if keepalives < 2 {
		t.Errorf("%d keepalives in the capture", keepalives)
	}

	toMaster, toSlave = goldenStreams(t, "badpassword")
	challenge = findMessage(t, toSlave, answerTo("answer", 1)).msg[2].(Tuple)
	response := findMessage(t, toMaster, callTo("respond")).msg[5].(Tuple)[0].([]byte)
	if !bytes.Equal(response, Respond(challenge[0].([]byte), "wrong-secret")) ||
		(md5Proof{challenge[0].([]byte), response}).Proves("stock-secret") {
		t.Error("the refused worker's response is not MD5 of its wrong password")
	}
	refusal := findMessage(t, toSlave, answerTo("error", 2)).msg[2]
	re, ok := refusal.(*RemoteError)
	if !ok || re.Type != "twisted.cred.error.UnauthorizedLogin" || re.Value != "" ||
		!strings.Contains(re.Traceback, "UnauthorizedLogin") {
		t.Fatalf("refusal = %#v", refusal)
	}
	// Our client reads it as a refusal.
	if !errors.Is(loginError(re), ErrUnauthorized) {
		t.Error("the stock refusal is not ErrUnauthorized")
	}
}

// loginError is what Broker.Login makes of a respond that failed with re.
func loginError(re *RemoteError) error {
	if re.Type == excUnauthorizedLogin[0] {
		return fmt.Errorf("%w: %s", ErrUnauthorized, re.Value)
	}
	return re
}

// goldenObject stands for an object numbered id by the sender, when a
// captured message is encoded again as its sender would.
type goldenObject struct{ id int64 }

func (goldenObject) Call(string, Tuple, map[string]any) (any, error) { return nil, nil }

// goldenRegistrar numbers goldenObjects as they were numbered.
type goldenRegistrar struct{}

func (goldenRegistrar) register(o Object) (int64, error) {
	if g, ok := o.(goldenObject); ok {
		return g.id, nil
	}
	return 0, fmt.Errorf("not a golden object: %T", o)
}
func (goldenRegistrar) owns(*Ref) bool { return false }

// asSent turns the *Refs of a decoded message back into the sender's
// objects, for encoding it again.
func asSent(v any) any {
	switch v := v.(type) {
	case *Ref:
		return goldenObject{v.id}
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = asSent(e)
		}
		return l
	case Tuple:
		return Tuple(asSent([]any(v)).([]any))
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = asSent(e)
		}
		return m
	}
	return v
}

// orderFree reports whether v encodes the same whatever the order of its
// dictionaries' keys and holds no failure (whose traceback we do not send):
// every dictionary in it has at most one key.
func orderFree(v any) bool {
	switch v := v.(type) {
	case *RemoteError:
		return false
	case []any:
		return !slices.ContainsFunc(v, func(e any) bool { return !orderFree(e) })
	case Tuple:
		return orderFree([]any(v))
	case map[string]any:
		if len(v) > 1 {
			return false
		}
		for _, e := range v {
			return orderFree(e)
		}
	}
	return true
}

// encodeMessage encodes a decoded message again with our encoder.
func encodeMessage(msg []any) ([]byte, error) {
	e := encoder{writer: writer{vocab: true}, reg: goldenRegistrar{}}
	e.list(len(msg))
	for _, v := range msg {
		if err := e.value(asSent(v)); err != nil {
			return nil, err
		}
	}
	return e.b, nil
}

// TestGoldenReencode encodes every captured message again with our
// encoder: it decodes to the same values, and where Twisted's encoding
// does not depend on a dictionary's order (Twisted sends keys in insertion
// order, we sort them) or on a traceback, to the same bytes.
func TestGoldenReencode(t *testing.T) {
	for _, name := range goldenCaptures {
		toMaster, toSlave := goldenStreams(t, name)
		same, total := 0, 0
		for _, m := range slices.Concat(toMaster, toSlave) {
			total++
			b, err := encodeMessage(m.msg)
			if err != nil {
				t.Errorf("%s: encode %v: %v", name, m.msg, err)
				continue
			}
			d := newGoldenDecoder(bytes.NewReader(b), Limits{})
			again, err := d.message()
			if err != nil {
				t.Errorf("%s: decode our encoding of %v: %v", name, m.msg, err)
				continue
			}
			if re, ok := m.msg[len(m.msg)-1].(*RemoteError); ok {
				// We send a failure's type and text, not its traceback.
				got, _ := again[len(again)-1].(*RemoteError)
				if got == nil || got.Type != re.Type || got.Value != re.Value {
					t.Errorf("%s: failure %#v came back as %#v", name, re, again[len(again)-1])
				}
				continue
			}
			if !reflect.DeepEqual(refsToIDs(again), refsToIDs(m.msg)) {
				t.Errorf("%s: %v came back as %v", name, m.msg, again)
			}
			if orderFree(m.msg) {
				if !bytes.Equal(b, m.raw) {
					t.Errorf("%s: %v:\n ours  %x\nstock %x", name, m.msg, b, m.raw)
				} else {
					same++
				}
			}
		}
		t.Logf("%s: %d of %d messages encode to the stock bytes", name, same, total)
	}
}

// pipeBroker returns a Broker on one end of a pipe and a reader of what
// it sends on the other; sent returns the bytes of the next message.
func pipeBroker(t *testing.T) (b *Broker, sent func() []byte) {
	t.Helper()
	ours, theirs := net.Pipe()
	t.Cleanup(func() { ours.Close(); theirs.Close() })
	b = newBroker(ours, BrokerConfig{}, nil)
	var rec bytes.Buffer
	d := newGoldenDecoder(io.TeeReader(theirs, &rec), Limits{})
	return b, func() []byte {
		t.Helper()
		theirs.SetReadDeadline(time.Now().Add(10 * time.Second))
		rec.Reset()
		if _, err := d.message(); err != nil {
			t.Fatalf("reading what the broker sent: %v", err)
		}
		n := d.read
		if d.r != nil {
			t.Fatal("the broker sent more than one message")
		}
		return bytes.Clone(rec.Bytes()[:n])
	}
}

// TestGoldenOurBytes checks that what our master and our client send in
// the stock peers' place is byte for byte what they sent: the handshake,
// the attach sequence's calls, answers, a decref, an interrupt, and the
// client's login and response.
func TestGoldenOurBytes(t *testing.T) {
	conns := readCapture(t, "build")
	offer, toSlave, err := splitStream(conns[0].toSlave, true)
	if err != nil {
		t.Fatal(err)
	}
	choice, toMaster, err := splitStream(conns[0].toMaster, false)
	if err != nil {
		t.Fatal(err)
	}
	stock := func(msgs []goldenMessage, match func([]any) bool) []byte {
		t.Helper()
		return findMessage(t, msgs, match).raw
	}
	same := func(what string, ours, stock []byte) {
		t.Helper()
		if !bytes.Equal(ours, stock) {
			t.Errorf("%s:\n ours  %x\nstock %x", what, ours, stock)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	t.Run("master handshake", func(t *testing.T) {
		ours, theirs := net.Pipe()
		defer ours.Close()
		defer theirs.Close()
		b := newBroker(ours, BrokerConfig{}, nil)
		go b.handshake(true)
		want := append(slices.Clip(offer), toSlave[0].raw...) // the offer, then [version, 6]
		got := make([]byte, len(want))
		theirs.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(theirs, got); err != nil {
			t.Fatal(err)
		}
		same("dialect offer and version", got, want)
	})
	t.Run("client handshake", func(t *testing.T) {
		ours, theirs := net.Pipe()
		defer ours.Close()
		defer theirs.Close()
		go func() {
			theirs.Write(offer)
		}()
		b := newBroker(ours, BrokerConfig{}, nil)
		go b.handshake(false)
		want := append(slices.Clip(choice), toMaster[0].raw...)
		got := make([]byte, len(want))
		theirs.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(theirs, got); err != nil {
			t.Fatal(err)
		}
		same("dialect choice and version", got, want)
	})

	t.Run("attach sequence", func(t *testing.T) {
		b, sent := pipeBroker(t)
		c := &Conn{s: &Server{}, b: b, mind: &Ref{b: b, id: 1}}
		go c.Print(ctx, "attached")
		same(`print "attached"`, sent(), stock(toSlave, callTo("print")))
		go c.mind.Call(ctx, "getWorkerInfo", nil, nil) // as Conn.attach sends it
		same("getWorkerInfo", sent(), stock(toSlave, callTo("getWorkerInfo")))
		go c.setBuilders(ctx, "hello")
		same("setBuilderList", sent(), stock(toSlave, callTo("setBuilderList")))
	})
	t.Run("answers", func(t *testing.T) {
		b, sent := pipeBroker(t)
		if _, err := b.register(goldenObject{1}); err != nil { // the challenger
			t.Fatal(err)
		}
		go b.answer(2, perspective{}, nil)
		same("the perspective", sent(), stock(toSlave, answerTo("answer", 2)))
		go b.answer(10, nil, nil)
		same("None", sent(), stock(toSlave, answerTo("answer", 10)))
		go b.answer(22, []byte("downloaded bytes\n"), nil)
		same("bytes read", sent(), stock(toSlave, answerTo("answer", 22)))
	})
	t.Run("interrupt", func(t *testing.T) {
		_, toSlave := goldenStreams(t, "interrupt")
		b, sent := pipeBroker(t)
		b.lastReq = 7
		go (&Ref{b: b, id: 2}).Call(ctx, "interruptCommand", Tuple{"0", "capture: stopped by the master"}, nil)
		same("interruptCommand", sent(), stock(toSlave, callTo("interruptCommand")))
	})
	t.Run("decref", func(t *testing.T) {
		_, toSlave := goldenStreams(t, "badpassword")
		b, sent := pipeBroker(t)
		go (&Ref{b: b, id: 1}).Release()
		same("decref", sent(), stock(toSlave, func(m []any) bool { return text(m[0]) == "decref" }))
	})
	t.Run("refusal", func(t *testing.T) {
		_, toSlave := goldenStreams(t, "badpassword")
		b, sent := pipeBroker(t)
		go b.answer(2, nil, &fatal{errors.New("refused"), &failure{parents: excUnauthorizedLogin}})
		raw := sent()
		ours := newGoldenDecoder(bytes.NewReader(raw), Limits{})
		got, err := ours.message()
		if err != nil {
			t.Fatal(err)
		}
		want := findMessage(t, toSlave, answerTo("error", 2)).msg
		g, w := got[2].(*RemoteError), want[2].(*RemoteError)
		if len(got) != 3 || got[1] != want[1] || g.Type != w.Type || g.Value != w.Value {
			t.Errorf("refusal = %v %#v, stock %v %#v", got[:2], g, want[:2], w)
		}
		// The failure's state has the stock keys and parents.
		ourState, stockState := failureState(t, raw), goldenStockFailureState(t, "badpassword")
		if !slices.Equal(slices.Sorted(maps.Keys(ourState)), slices.Sorted(maps.Keys(stockState))) {
			t.Errorf("failure keys %v, stock %v", slices.Sorted(maps.Keys(ourState)), slices.Sorted(maps.Keys(stockState)))
		}
		wantValue(t, "failure parents", ourState["parents"], stockState["parents"])
		wantValue(t, "failure type", ourState["type"], stockState["type"])
	})
	t.Run("client login", func(t *testing.T) {
		b, sent := pipeBroker(t)
		go b.Root().Call(ctx, "login", Tuple{[]byte("stock")}, nil)
		same("login", sent(), stock(toMaster, callTo("login")))
		challenge := findMessage(t, toSlave, answerTo("answer", 1)).msg[2].(Tuple)[0].([]byte)
		go (&Ref{b: b, id: 1}).Call(ctx, "respond", Tuple{Respond(challenge, "stock-secret"), goldenObject{1}}, nil)
		same("respond", sent(), stock(toMaster, callTo("respond")))
	})
}

// goldenStockFailureState is the state of the stock master's refusal.
func goldenStockFailureState(t *testing.T, name string) map[string]any {
	t.Helper()
	for _, c := range readCapture(t, name) {
		_, msgs, err := splitStream(c.toSlave, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if answerTo("error", 2)(m.msg) {
				return failureState(t, m.raw)
			}
		}
	}
	t.Fatal("no refusal in the capture")
	return nil
}

// failureState decodes an [error, id, failure] message's failure as the
// dictionary it carries.
func failureState(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	// Skip to the failure's state: list(3) "error" id, list(2) class name.
	d := newGoldenDecoder(bufio.NewReader(bytes.NewReader(raw)), Limits{})
	d.begin()
	if _, typ, err := d.token(); err != nil || typ != tokList {
		t.Fatal("not a list")
	}
	if a, err := d.atom(); err != nil || string(a) != "error" {
		t.Fatalf("not an error: %q %v", a, err)
	}
	if _, err := d.int(); err != nil {
		t.Fatal(err)
	}
	if n, typ, err := d.token(); err != nil || typ != tokList || n != 2 {
		t.Fatal("failure is not a list of two")
	}
	if a, err := d.atom(); err != nil || string(a) != copyableFailure {
		t.Fatalf("failure class %q, %v", a, err)
	}
	v, err := d.value(2)
	if err != nil {
		t.Fatal(err)
	}
	return v.(map[string]any)
}
