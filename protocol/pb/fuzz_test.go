package pb

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/buildslave/buildslave/slave"
)

// fuzzSeeds returns each message of every capture, both directions, as
// its own seed, and each direction's whole stream after the handshake.
func fuzzSeeds(t testing.TB, toMasterOnly bool) [][]byte {
	var seeds [][]byte
	for _, name := range goldenCaptures {
		for _, c := range readCapture(t, name) {
			dirs := []struct {
				stream     []byte
				fromMaster bool
			}{{c.toMaster, false}, {c.toSlave, true}}
			if toMasterOnly {
				dirs = dirs[:1]
			}
			for _, d := range dirs {
				dialect, msgs, err := splitStream(d.stream, d.fromMaster)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs {
					seeds = append(seeds, m.raw)
				}
				seeds = append(seeds, d.stream[len(dialect):])
			}
		}
	}
	return seeds
}

// FuzzDecode decodes messages from arbitrary bytes: the decoder never
// panics, fails only with ErrMalformed, ErrTooLarge or a truncation, and
// what it decodes encodes again (and decodes to the same encoding).
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds(f, false) {
		f.Add(s)
	}
	for _, c := range worstCases() {
		f.Add(c.msg[:min(len(c.msg), 4096)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newGoldenDecoder(bytes.NewReader(data), Limits{MaxMessageBytes: 64 << 10})
		for {
			msg, err := d.message()
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("error of an unexpected kind: %v", err)
				}
				return
			}
			if d.read < 1 || d.alloc > d.lim.AllocFactor*d.read+allocSlack {
				t.Fatalf("decoded %d bytes, charged %d", d.read, d.alloc)
			}
			Plain([]any(msg))
			enc, err := encodeMessage(msg)
			if err != nil {
				if invalidUTF8(msg) {
					continue // a key sent as bytes that are not UTF-8: not unicode
				}
				t.Fatalf("encoding %v again: %v", msg, err)
			}
			again, err := newGoldenDecoder(bytes.NewReader(enc), Limits{MaxMessageBytes: len(enc) + 1}).message()
			if err != nil {
				// A message with references is sent again with copies,
				// which may be larger than the budget allows.
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("decoding our encoding %x of %v: %v", enc, msg, err)
				}
				continue
			}
			if enc2, err := encodeMessage(again); err != nil || !bytes.Equal(enc, enc2) {
				t.Fatalf("%v encodes as %x, decodes as %v, encodes as %x (%v)", msg, enc, again, enc2, err)
			}
		}
	})
}

// invalidUTF8 reports whether a decoded value holds a string that is not
// valid UTF-8 (a dictionary key sent as bytes).
func invalidUTF8(v any) bool {
	switch v := v.(type) {
	case string:
		return !utf8.ValidString(v)
	case []any:
		return slices.ContainsFunc(v, invalidUTF8)
	case Tuple:
		return slices.ContainsFunc(v, invalidUTF8)
	case map[string]any:
		for k, e := range v {
			if !utf8.ValidString(k) || invalidUTF8(e) {
				return true
			}
		}
	}
	return false
}

// TestEncoderRefusesInvalidUTF8: a string that is not UTF-8 cannot travel
// as unicode (the peer would drop the connection); the encoder says so
// instead of sending it. A dictionary with such a key is what the decoder
// makes of a key sent as bytes (found by FuzzDecode).
func TestEncoderRefusesInvalidUTF8(t *testing.T) {
	for _, v := range []any{"a\xff", map[string]any{"\xfe": 1}, []any{"ok", Tuple{"\xc3"}}} {
		e := encoder{writer: writer{vocab: true}, reg: goldenRegistrar{}}
		if err := e.value(v); err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
			t.Errorf("encoding %q: %v", v, err)
		}
	}
	e := encoder{writer: writer{vocab: true}, reg: goldenRegistrar{}}
	if err := e.value([]byte("a\xff")); err != nil {
		t.Errorf("bytes: %v", err)
	}
}

// fuzzServer is a Server with a Manager, served over pipes.
type fuzzServer struct {
	m *slave.Manager
	s *Server
}

func newFuzzServer(t testing.TB) *fuzzServer {
	var slaves []*slave.Slave
	for _, name := range []string{"bad", "good1"} {
		s, err := slave.New(name, "pw-"+name)
		if err != nil {
			t.Fatal(err)
		}
		slaves = append(slaves, s)
	}
	log := slog.New(slog.DiscardHandler)
	m, err := slave.NewManager(slave.Config{Logger: log, RefusalBurst: -1}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	return &fuzzServer{m: m, s: &Server{Manager: m, Builders: []string{"hello"}, Logger: log,
		LoginTimeout: 2 * time.Second, StepTimeout: 2 * time.Second,
		Broker: BrokerConfig{Limits: Limits{MaxMessageBytes: 64 << 10}, WriteTimeout: 2 * time.Second}}}
}

// dial connects a raw peer to the server over a pipe, and runs the
// handshake.
func (fs *fuzzServer) dial(t testing.TB) *rawPeer {
	ours, theirs := net.Pipe()
	fs.s.start(theirs)
	p := newRawPeer(t, ours)
	p.handshake()
	return p
}

func (fs *fuzzServer) close() {
	fs.s.Close()
	fs.m.Close()
}

// FuzzServe sends arbitrary bytes to a real Server on a connection that
// logged in and attached: the server never panics, ends that connection
// (when the peer closes it, if not before), and another slave attaches
// afterwards.
func FuzzServe(f *testing.F) {
	for _, s := range fuzzSeeds(f, true) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := newFuzzServer(t)
		defer fs.close()

		p := fs.dial(t)
		p.attach("bad")
		// Read whatever the master sends from now on, so that it never
		// blocks on a write to the pipe.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, p.nc)
		}()
		p.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.nc.Write(data); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the master stopped reading without closing the connection")
			}
		}
		p.nc.Close()
		<-drained

		// The server survives: another slave attaches.
		g := fs.dial(t)
		perspective := g.attach("good1")
		if _, err := g.answer(g.call(perspective, "keepalive"), nil); err != nil {
			t.Fatalf("keepalive after the fuzzed connection: %v", err)
		}
		g.nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := fs.s.Shutdown(ctx); err != nil {
			t.Fatalf("the server's connections did not end: %v", err)
		}
	})
}
