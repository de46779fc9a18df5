package wire

import (
	"fmt"
)

// Message is one decoded protocol message: a request {op, seq_number, ...}
// or a response {op: "response", seq_number, result, is_exception?}.
// Its typed accessors return a *FieldError for a missing field or a field of
// the wrong type.
type Message map[string]any

// DecodeMessage decodes p with the default DecodeLimits; see
// DecodeLimits.DecodeMessage.
func DecodeMessage(p []byte) (Message, error) { return DecodeLimits{}.DecodeMessage(p) }

// DecodeMessage decodes one frame: a msgpack map with a str "op" and a
// non-negative integer "seq_number", within l's bounds. Any other input is
// an error matching ErrMalformed.
func (l DecodeLimits) DecodeMessage(p []byte) (Message, error) {
	l = l.withDefaults()
	msg, _, err := l.decodeMessage(p, l.memBound(len(p)))
	return msg, err
}

// decodeMessage is DecodeMessage within mem bytes of memory (l has its
// defaults). It also returns the bytes it charged.
func (l DecodeLimits) decodeMessage(p []byte, mem int) (Message, int, error) {
	v, used, err := l.decodeValue(p, mem)
	if err != nil {
		return nil, used, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, used, fmt.Errorf("%w: message is %s, want map", ErrMalformed, typeName(v))
	}
	msg := Message(m)
	if _, err := msg.String("op"); err != nil {
		return nil, used, err
	}
	if seq, err := msg.Int("seq_number"); err != nil {
		return nil, used, err
	} else if seq < 0 {
		return nil, used, fmt.Errorf("%w: negative seq_number %d", ErrMalformed, seq)
	}
	return msg, used, nil
}

// AppendMessage appends the encoding of a message with the given op and
// seq_number followed by fields (which must not repeat op or seq_number).
func AppendMessage(b []byte, op string, seq int64, fields map[string]any) ([]byte, error) {
	b = appendMapHeader(b, len(fields)+2)
	b = append(appendStrHeader(b, 2), "op"...)
	b = append(appendStrHeader(b, len(op)), op...)
	b = append(appendStrHeader(b, 10), "seq_number"...)
	b = appendInt(b, seq)
	var err error
	for k, v := range fields {
		b = append(appendStrHeader(b, len(k)), k...)
		if b, err = AppendValue(b, v); err != nil {
			return b, fmt.Errorf("field %q: %w", k, err)
		}
	}
	return b, nil
}

// Op is the message's op ("" if absent, which DecodeMessage never returns).
func (m Message) Op() string {
	op, _ := m["op"].(string)
	return op
}

// Seq is the message's seq_number (-1 if absent, which DecodeMessage never returns).
func (m Message) Seq() int64 {
	seq, err := m.Int("seq_number")
	if err != nil {
		return -1
	}
	return seq
}

// Has reports whether the message has the field key, even with a nil value.
func (m Message) Has(key string) bool {
	_, ok := m[key]
	return ok
}

// String returns the str field key.
func (m Message) String(key string) (string, error) { return field[string](m, key, "str") }

// Bytes returns the bin field key. Python peers may send text as str where
// bytes are expected, so a str is accepted too.
func (m Message) Bytes(key string) ([]byte, error) {
	if s, ok := m[key].(string); ok {
		return []byte(s), nil
	}
	return field[[]byte](m, key, "bin")
}

// Bool returns the bool field key.
func (m Message) Bool(key string) (bool, error) { return field[bool](m, key, "bool") }

// List returns the array field key.
func (m Message) List(key string) ([]any, error) { return field[[]any](m, key, "array") }

// Map returns the map field key.
func (m Message) Map(key string) (map[string]any, error) {
	return field[map[string]any](m, key, "map")
}

// Int returns the integer field key; it must fit in an int64.
func (m Message) Int(key string) (int64, error) {
	v, ok := m[key]
	if i, isInt := AsInt(v); isInt {
		return i, nil
	}
	return 0, &FieldError{Key: key, Want: "int", Got: gotName(v, ok)}
}

// Float returns the number field key (an int or a float) as a float64.
func (m Message) Float(key string) (float64, error) {
	v, ok := m[key]
	if f, isNum := AsFloat(v); isNum {
		return f, nil
	}
	return 0, &FieldError{Key: key, Want: "float", Got: gotName(v, ok)}
}

// AsInt converts a decoded integer to an int64.
func AsInt(v any) (int64, bool) {
	i, ok := v.(int64)
	return i, ok
}

// AsFloat converts a decoded number (int or float) to a float64.
func AsFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case int64:
		return float64(v), true
	case uint64:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

func field[T any](m Message, key, want string) (T, error) {
	v, ok := m[key]
	t, isT := v.(T)
	if !isT {
		return t, &FieldError{Key: key, Want: want, Got: gotName(v, ok)}
	}
	return t, nil
}

func gotName(v any, present bool) string {
	if !present {
		return "nothing"
	}
	return typeName(v)
}

// FieldError reports a message field that is missing or has the wrong type.
// It matches ErrMalformed.
type FieldError struct {
	Key  string // the field's name
	Want string // the msgpack type wanted: "str", "int", "map", ...
	Got  string // the type found, or "nothing" when the field is missing
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("malformed message: field %q: want %s, got %s", e.Key, e.Want, e.Got)
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *FieldError) Is(target error) bool { return target == ErrMalformed }
