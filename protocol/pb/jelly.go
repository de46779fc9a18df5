package pb

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// The Go values of jelly, the typed s-expressions PB sends inside banana:
//
//	jelly                Go
//	None                 nil
//	boolean              bool
//	int (any size)       int64 (larger ones are refused)
//	float                float64
//	bytes                []byte
//	unicode              string
//	list, set, frozenset []any
//	tuple                Tuple
//	dictionary           map[string]any (keys unicode or bytes)
//	remote               *Ref: a reference to an object of the peer
//	local                the Object of ours the peer sent back
//	a copied Failure     *RemoteError
//
// Jelly that names any other class, module, function or instance is
// refused: PB as Buildbot uses it never sends one.

// Tuple is a jelly tuple: PB's call arguments are one.
type Tuple []any

// RemoteError is a Failure the peer sent: the answer to a call that failed
// on its side, or the failure a remote command completed with.
type RemoteError struct {
	Type      string // the exception's qualified class name
	Value     string // its text
	Traceback string // as the peer chose to share it
}

func (e *RemoteError) Error() string {
	if e.Value == "" {
		return "remote error: " + e.Type
	}
	return "remote error: " + e.Type + ": " + e.Value
}

// The exception classes the master and slave sides name in the failures
// they send, with their ancestors (a Failure carries them so that the peer
// can match its classes).
var (
	excUnauthorizedLogin = []string{"twisted.cred.error.UnauthorizedLogin", "twisted.cred.error.LoginFailed",
		"twisted.cred.error.Unauthorized", "builtins.Exception", "builtins.BaseException", "builtins.object"}
	excNoSuchMethod = []string{"twisted.spread.flavors.NoSuchMethod", "builtins.AttributeError",
		"builtins.Exception", "builtins.BaseException", "builtins.object"}
	excError = []string{"twisted.spread.pb.Error", "builtins.Exception", "builtins.BaseException", "builtins.object"}
)

// copyableFailure is the class tag of a Failure sent over PB.
const copyableFailure = "twisted.spread.pb.CopyableFailure"

// failure is an error we send: its Type and parents say what kind it is.
type failure struct {
	parents []string // the exception's class, then its ancestors
	text    string
}

func (f *failure) Error() string { return f.text }

// NoSuchMethod is the error an Object's Call returns for a method it
// lacks: the peer sees Twisted's NoSuchMethod, which Buildbot's masters
// take as "try the older name".
func NoSuchMethod(method string) error { return noSuchMethod(method) }

func noSuchMethod(method string) *failure {
	return &failure{parents: excNoSuchMethod, text: "No such method: remote_" + method}
}

// Resolver turns the references in a decoded message into values: "remote"
// (an object of the peer) and "local" (one of ours the peer sent back).
type resolver interface {
	remoteRef(luid int64) (*Ref, error)
	localObject(luid int64) (Object, error)
}

// decoder unjellies the values of one message.
type decoder struct {
	*reader
	res  resolver
	refs map[int64]any // jelly's "reference"d values (a ref, or inProgress), by number
}

// message reads one PB message: a banana list whose items are jelly
// (its first item, the command, is a plain atom).
func (d *decoder) message() ([]any, error) {
	d.begin()
	d.forgetRefs()
	n, typ, err := d.token()
	if err != nil {
		return nil, err
	}
	if typ != tokList {
		return nil, d.errorf(ErrMalformed, "message is not a list (type byte 0x%02x)", typ)
	}
	if n == 0 || n > maxMessageItems {
		return nil, d.errorf(ErrMalformed, "message of %d elements", n)
	}
	if err := d.charge(16 * int(n)); err != nil {
		return nil, err
	}
	msg := make([]any, 0, n)
	for range n {
		// Each item was jellied on its own: its references are its own.
		d.forgetRefs()
		v, err := d.value(1)
		if err != nil {
			return nil, err
		}
		msg = append(msg, v)
	}
	d.idle()
	return msg, nil
}

// maxMessageItems bounds the items of a PB message ("message" has seven).
const maxMessageItems = 8

// Costs charged to a message for what decoding it allocates, beyond the
// bytes of its strings: they are the runtime's, measured (Go 1.26, amd64)
// with what growing a map by one entry at a time leaves behind.
const (
	boxCost      = 24  // a slice or string boxed in an interface
	mapCost      = 48  // an empty map
	mapEntryCost = 192 // one more entry of a map[string]any, its growth included
	refEntryCost = 160 // one more entry of the references' map[int64]any
)

// forgetRefs forgets the references of the item before; a map that grew
// large is dropped rather than kept for the connection's life.
func (d *decoder) forgetRefs() {
	if len(d.refs) > 64 {
		d.refs = map[int64]any{}
		return
	}
	clear(d.refs)
}

// ref is a value jelly's "reference" names, with what decoding it cost,
// which each "dereference" of it is charged again: code that copies the
// decoded message (Plain, ParseInfo) copies it each time.
type ref struct {
	v    any
	cost int
}

// items reads n jelly values into l.
func (d *decoder) items(n uint64, depth int, l []any) ([]any, error) {
	if n > SizeLimit {
		return nil, d.errorf(ErrTooLarge, "list of %d elements is over banana's limit of %d", n, SizeLimit)
	}
	for range n {
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		if len(l) == cap(l) {
			// Grow by doubling, charging the new array before it is made.
			grown := int(min(uint64(max(2*cap(l), 4)), n))
			if err := d.charge(16 * grown); err != nil {
				return nil, err
			}
			l = append(make([]any, 0, grown), l...)
		}
		l = append(l, v)
	}
	return l, nil
}

// value reads one jelly value.
func (d *decoder) value(depth int) (any, error) {
	n, typ, err := d.token()
	if err != nil {
		return nil, err
	}
	switch typ {
	case tokInt, tokNeg, tokLongInt, tokLongNeg:
		v, err := d.signed(n, typ)
		if err != nil {
			return nil, err
		}
		return v, d.charge(8)
	case tokFloat:
		f, err := d.float()
		if err != nil {
			return nil, err
		}
		return f, d.charge(8)
	case tokString:
		return d.bytes(n)
	case tokVocab:
		if _, err := d.vocab(n); err != nil {
			return nil, err
		}
		return vocabularyValues[n], nil // boxed once: a VOCAB token allocates nothing
	case tokList:
		if depth >= d.lim.MaxDepth {
			return nil, d.errorf(ErrMalformed, "lists nested deeper than %d", d.lim.MaxDepth)
		}
		if n == 0 {
			return nil, d.errorf(ErrMalformed, "jelly list without a type")
		}
		return d.typed(n-1, depth+1)
	}
	return nil, d.errorf(ErrMalformed, "unknown type byte 0x%02x", typ)
}

// atom reads a plain byte string (STRING or VOCAB).
func (d *decoder) atom() ([]byte, error) {
	n, typ, err := d.token()
	if err != nil {
		return nil, err
	}
	switch typ {
	case tokString:
		return d.bytes(n)
	case tokVocab:
		return d.vocab(n)
	}
	return nil, d.errorf(ErrMalformed, "expected a string, got type byte 0x%02x", typ)
}

// int reads a plain integer.
func (d *decoder) int() (int64, error) {
	n, typ, err := d.token()
	if err != nil {
		return 0, err
	}
	switch typ {
	case tokInt, tokNeg, tokLongInt, tokLongNeg:
		return d.signed(n, typ)
	}
	return 0, d.errorf(ErrMalformed, "expected an integer, got type byte 0x%02x", typ)
}

// typed reads the rest of a jelly list of n elements after its type.
func (d *decoder) typed(n uint64, depth int) (any, error) {
	tag, err := d.atom()
	if err != nil {
		return nil, err
	}
	want := func(count uint64) error {
		if n != count {
			return d.errorf(ErrMalformed, "jelly %q with %d elements, want %d", tag, n, count)
		}
		return nil
	}
	switch string(tag) {
	case "None":
		return nil, want(0)
	case "unicode":
		if err := want(1); err != nil {
			return nil, err
		}
		b, err := d.atom()
		if err != nil {
			return nil, err
		}
		if !validUTF8(b) {
			return nil, d.errorf(ErrMalformed, "unicode is not valid UTF-8")
		}
		return string(b), d.charge(boxCost + len(b)) // the string's copy, boxed
	case "boolean":
		if err := want(1); err != nil {
			return nil, err
		}
		b, err := d.atom()
		if err != nil {
			return nil, err
		}
		switch string(b) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, d.errorf(ErrMalformed, "boolean %q", b)
	case "list", "set", "frozenset":
		if err := d.charge(boxCost); err != nil {
			return nil, err
		}
		l, err := d.items(n, depth, nil)
		if l == nil && err == nil {
			l = []any{}
		}
		return l, err
	case "tuple":
		if err := d.charge(boxCost); err != nil {
			return nil, err
		}
		l, err := d.items(n, depth, nil)
		return Tuple(l), err
	case "dictionary":
		return d.dictionary(n, depth)
	case "reference":
		if err := want(2); err != nil {
			return nil, err
		}
		id, err := d.int()
		if err != nil {
			return nil, err
		}
		if _, dup := d.refs[id]; dup {
			return nil, d.errorf(ErrMalformed, "reference %d defined twice", id)
		}
		d.refs[id] = inProgress{}
		before := d.alloc
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		d.refs[id] = ref{v, d.alloc - before}
		return v, d.charge(refEntryCost)
	case "dereference":
		if err := want(1); err != nil {
			return nil, err
		}
		id, err := d.int()
		if err != nil {
			return nil, err
		}
		switch r, ok := d.refs[id]; {
		case !ok:
			return nil, d.errorf(ErrMalformed, "dereference of unknown reference %d", id)
		case r == inProgress{}:
			return nil, d.errorf(ErrMalformed, "reference %d refers to itself", id)
		default:
			return r.(ref).v, d.charge(r.(ref).cost)
		}
	case "remote", "local":
		if err := want(1); err != nil {
			return nil, err
		}
		id, err := d.int()
		if err != nil {
			return nil, err
		}
		if err := d.charge(64); err != nil {
			return nil, err
		}
		if string(tag) == "remote" {
			return d.res.remoteRef(id)
		}
		return d.res.localObject(id)
	case copyableFailure:
		if err := want(1); err != nil {
			return nil, err
		}
		state, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		re, err := failureFromState(state)
		if err != nil {
			return nil, err
		}
		return re, d.charge(64 + len(re.Type) + len(re.Value) + len(re.Traceback))
	}
	return nil, d.errorf(ErrMalformed, "jelly of type %q is refused (only plain values, references and failures are accepted)", truncate(tag, 64))
}

// inProgress marks a reference whose value is still being decoded.
type inProgress struct{}

func (d *decoder) dictionary(n uint64, depth int) (any, error) {
	if n > SizeLimit {
		return nil, d.errorf(ErrTooLarge, "dictionary of %d entries is over banana's limit of %d", n, SizeLimit)
	}
	if err := d.charge(mapCost); err != nil {
		return nil, err
	}
	m := make(map[string]any, min(n, 8))
	for range n {
		if depth >= d.lim.MaxDepth {
			return nil, d.errorf(ErrMalformed, "lists nested deeper than %d", d.lim.MaxDepth)
		}
		c, typ, err := d.token()
		if err != nil {
			return nil, err
		}
		if typ != tokList || c != 2 {
			return nil, d.errorf(ErrMalformed, "dictionary entry is not a [key, value] list")
		}
		k, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		var key string
		cost := mapEntryCost
		switch k := k.(type) {
		case string:
			key = k
		case []byte:
			key = string(k)
			cost += len(key) // the key's copy
		default:
			return nil, d.errorf(ErrMalformed, "dictionary key is %s, want unicode or bytes", typeName(k))
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		if err := d.charge(cost); err != nil {
			return nil, err
		}
		m[key] = v
	}
	return m, nil
}

// failureFromState reads the state of a copied Failure.
func failureFromState(state any) (*RemoteError, error) {
	m, ok := state.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: failure state is %s, want dictionary", ErrMalformed, typeName(state))
	}
	// A failure is for people to read, and Python 2 peers send its texts as
	// bytes: any that are not UTF-8 become U+FFFD, so that the error can be
	// logged and sent on as unicode.
	shown := func(v any) string { return strings.ToValidUTF8(text(v), "\uFFFD") }
	return &RemoteError{Type: shown(m["type"]), Value: shown(m["value"]), Traceback: shown(m["traceback"])}, nil
}

// text is a unicode or bytes value as a string; "" for anything else.
func text(v any) string {
	s, _ := textValue(v)
	return s
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// typeName names the jelly type of a decoded value, for error messages.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "None"
	case bool:
		return "boolean"
	case int64:
		return "int"
	case float64:
		return "float"
	case []byte:
		return "bytes"
	case string:
		return "unicode"
	case []any:
		return "list"
	case Tuple:
		return "tuple"
	case map[string]any:
		return "dictionary"
	case *Ref:
		return "remote reference"
	case *RemoteError:
		return "failure"
	}
	return fmt.Sprintf("%T", v)
}

// registrar gives the local objects we send their numbers.
type registrar interface {
	register(Object) (int64, error)
	owns(*Ref) bool
}

// encoder jellies values into a banana writer.
type encoder struct {
	writer
	reg registrar
}

// value appends the jelly of v. Maps are sent with their keys in order, so
// that equal values encode equally.
func (e *encoder) value(v any) error {
	switch v := v.(type) {
	case nil:
		e.list(1)
		e.atom("None")
	case bool:
		e.list(2)
		e.atom("boolean")
		if v {
			e.atom("true")
		} else {
			e.atom("false")
		}
	case int:
		e.int(int64(v))
	case int64:
		e.int(v)
	case int32:
		e.int(int64(v))
	case uint32:
		e.int(int64(v))
	case float64:
		e.float(v)
	case string:
		if len(v) > SizeLimit {
			return fmt.Errorf("pb: string of %d bytes is over banana's limit", len(v))
		}
		if !utf8.ValidString(v) {
			// The peer would fail to decode it and drop the connection.
			return fmt.Errorf("pb: string %q is not valid UTF-8, which unicode must be; send it as []byte", truncate([]byte(v), 32))
		}
		e.list(2)
		e.atom("unicode")
		e.atom(v) // a word of the vocabulary travels as VOCAB here too, as Twisted sends it
	case []byte:
		if len(v) > SizeLimit {
			return fmt.Errorf("pb: bytes of %d bytes are over banana's limit", len(v))
		}
		e.bytes(v)
	case []any:
		return e.sequence("list", v)
	case []string:
		e.list(len(v) + 1)
		e.atom("list")
		for _, s := range v {
			if err := e.value(s); err != nil {
				return err
			}
		}
	case Tuple:
		return e.sequence("tuple", v)
	case map[string]any:
		return e.dictionary(v)
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		return e.dictionary(m)
	case *Ref:
		if !e.reg.owns(v) {
			return fmt.Errorf("pb: a reference can only be sent back to its own peer")
		}
		e.list(2)
		e.atom("local")
		e.int(v.id)
	case Object:
		id, err := e.reg.register(v)
		if err != nil {
			return err
		}
		e.list(2)
		e.atom("remote")
		e.int(id)
	case *failure:
		return e.failure(v)
	case *RemoteError:
		return e.failure(&failure{parents: append([]string{v.Type}, excError[1:]...), text: v.Value})
	default:
		return fmt.Errorf("pb: cannot send a %T", v)
	}
	return nil
}

func (e *encoder) sequence(tag string, l []any) error {
	e.list(len(l) + 1)
	e.atom(tag)
	for _, v := range l {
		if err := e.value(v); err != nil {
			return err
		}
	}
	return nil
}

func (e *encoder) dictionary(m map[string]any) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.list(len(m) + 1)
	e.atom("dictionary")
	for _, k := range keys {
		e.list(2)
		if err := e.value(k); err != nil {
			return err
		}
		if err := e.value(m[k]); err != nil {
			return err
		}
	}
	return nil
}

// failure appends f as the CopyableFailure the stock peers send.
func (e *encoder) failure(f *failure) error {
	e.list(2)
	e.atom(copyableFailure)
	return e.dictionary(map[string]any{
		"type":             []byte(f.parents[0]),
		"value":            f.text,
		"parents":          f.parents,
		"traceback":        "Traceback unavailable\n",
		"frames":           []any{},
		"stack":            []any{},
		"tb":               nil,
		"count":            0,
		"pickled":          1,
		"captureVars":      false,
		"unsafeTracebacks": false,
	})
}
