package pb

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// ErrUnauthorized is the error of a login the master refused.
var ErrUnauthorized = errors.New("pb: the master refused the name or password")

// Connect runs the client side of PB's handshake on conn and returns its
// Broker. Run Serve on it, then Login.
func Connect(conn net.Conn, cfg BrokerConfig) (*Broker, error) {
	b := newBroker(conn, cfg, nil)
	if err := b.handshake(false); err != nil {
		b.CloseWithCause(err)
		return nil, err
	}
	return b, nil
}

// Login logs in as name with PB's challenge and response (the password
// never travels) and hands mind to the master, which calls it to run the
// slave; it returns the master's perspective once the master has accepted
// and set up the slave. A refusal is an error wrapping ErrUnauthorized.
func (b *Broker) Login(ctx context.Context, name, password string, mind Object) (*Ref, error) {
	v, err := b.Root().Call(ctx, "login", Tuple{[]byte(name)}, nil)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	l := AsList(v)
	if len(l) != 2 {
		return nil, fmt.Errorf("%w: login answered %s", ErrMalformed, typeName(v))
	}
	challenge, ok1 := l[0].([]byte)
	challenger, ok2 := l[1].(*Ref)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: login answered %s", ErrMalformed, typeName(v))
	}
	v, err = challenger.Call(ctx, "respond", Tuple{Respond(challenge, password), mind}, nil)
	challenger.Release()
	var re *RemoteError
	if errors.As(err, &re) && re.Type == excUnauthorizedLogin[0] {
		return nil, fmt.Errorf("%w: %s", ErrUnauthorized, re.Value)
	}
	if err != nil {
		return nil, fmt.Errorf("respond: %w", err)
	}
	perspective, ok := v.(*Ref)
	if !ok {
		return nil, fmt.Errorf("%w: respond answered %s", ErrMalformed, typeName(v))
	}
	return perspective, nil
}

// Plain turns jelly's values into the plain ones Go code reads: bytes
// (how Python 2 peers, such as Buildbot 0.8 slaves, send text) become
// strings and tuples lists, recursively.
func Plain(v any) any {
	switch v := v.(type) {
	case []byte:
		return string(v)
	case Tuple:
		return Plain([]any(v))
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = Plain(e)
		}
		return l
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = Plain(e)
		}
		return m
	}
	return v
}

// AsList returns the elements of a list or a tuple, nil for anything else.
func AsList(v any) []any {
	switch l := v.(type) {
	case []any:
		return l
	case Tuple:
		return l
	}
	return nil
}
