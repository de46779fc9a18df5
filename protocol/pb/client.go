package pb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
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
// strings and tuples lists, recursively. A list or dictionary with nothing
// to turn is returned as it is, not copied.
func Plain(v any) any {
	p, _ := plain(v)
	return p
}

// plain is Plain, reporting whether anything was turned; a list or a
// dictionary is copied only then.
func plain(v any) (any, bool) {
	switch v := v.(type) {
	case []byte:
		return string(v), true
	case Tuple:
		l, _ := plain([]any(v))
		return l, true
	case []any:
		var l []any
		for i, e := range v {
			if p, turned := plain(e); turned {
				if l == nil {
					l = slices.Clone(v)
				}
				l[i] = p
			}
		}
		if l == nil {
			return v, false
		}
		return l, true
	case map[string]any:
		var m map[string]any
		for k, e := range v {
			if p, turned := plain(e); turned {
				if m == nil {
					m = maps.Clone(v)
				}
				m[k] = p
			}
		}
		if m == nil {
			return v, false
		}
		return m, true
	}
	return v, false
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
