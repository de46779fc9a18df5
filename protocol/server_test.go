package protocol

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/wire"
)

// startServer serves h with a Server on a loopback port.
func startServer(t testing.TB, s *Server) net.Addr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		wg.Wait()
	})
	return l.Addr()
}

func TestServerDropsSlowloris(t *testing.T) {
	ms := newMaster(t, nil)
	addr := startServer(t, &Server{Handler: ms.h, ReadHeaderTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// The header never ends: the server must hang up on its own.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("connection was not closed by the server: %v", err)
	}
}

func TestServerTLS(t *testing.T) {
	ms := newMaster(t, nil)
	certSrv := httptest.NewTLSServer(http.NotFoundHandler()) // borrow its certificate
	defer certSrv.Close()
	addr := startServer(t, &Server{Handler: ms.h, TLSConfig: &tls.Config{Certificates: certSrv.TLS.Certificates}})
	d := &wire.Dialer{TLSConfig: certSrv.Client().Transport.(*http.Transport).TLSClientConfig}
	tr, err := d.Dial(t.Context(), "wss://"+addr.String()+"/", "s1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	newFakeSlave(t, tr)
	b, err := ms.m.Acquire(t.Context(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if err := b.Conn().Print(t.Context(), "over TLS"); err != nil {
		t.Error(err)
	}
	// A plain-text client gets no upgrade.
	resp, err := http.Get("http://" + addr.String() + "/")
	if err == nil {
		if resp.StatusCode == http.StatusSwitchingProtocols {
			t.Error("plain HTTP upgraded on a TLS server")
		}
		resp.Body.Close()
	}
}

func TestShutdownDropsConnectionsAndRefusesNew(t *testing.T) {
	ms := newMaster(t, nil)
	_, c := ms.attach(t, "s1")
	if err := ms.h.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-c.Context().Done()
	_, err := ms.dial(t, "s2", "pw")
	var he *wire.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Shutdown = %v", err)
	}
}

func TestServerWithoutHandlerSaysWhatToSet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     *Server
		field string
	}{
		{"no Handler", &Server{}, "Server.Handler"},
		{"no Manager", &Server{Handler: &Handler{}}, "Server.Handler.Manager"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			err = tc.s.Serve(l)
			if !errors.Is(err, ErrNoHandler) || !strings.Contains(err.Error(), tc.field+" is nil") {
				t.Errorf("Serve = %v, want an error wrapping ErrNoHandler naming %s", err, tc.field)
			}
			if _, err := l.Accept(); err == nil {
				t.Error("Serve left the listener open")
			}
			if err := tc.s.ListenAndServe("127.0.0.1:0"); !errors.Is(err, ErrNoHandler) {
				t.Errorf("ListenAndServe = %v, want ErrNoHandler", err)
			}
			if err := tc.s.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown = %v", err)
			}
			if err := tc.s.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}
		})
	}
}

// TestServerAnswersWhatIsNotAnUpgrade sends the Server requests it does
// not upgrade: each gets its status and the connection closes after it
// (headers too large may be reset instead: the server reads no further).
func TestServerAnswersWhatIsNotAnUpgrade(t *testing.T) {
	ms := newMaster(t, nil)
	addr := startServer(t, &Server{Handler: ms.h, MaxHeaderBytes: 1024})
	for _, tc := range []struct {
		name, request string
		status        int
	}{
		{"plain GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusUnauthorized},
		{"wrong password", "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: " + wire.BasicAuth("s1", "nope") + "\r\n\r\n", http.StatusUnauthorized},
		{"no upgrade", "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: " + wire.BasicAuth("s1", "pw") + "\r\n\r\n", http.StatusBadRequest},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("y", 8192) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"not HTTP", "hello\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.request); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			all, err := io.ReadAll(conn) // ends: the server closed the connection
			if tc.status == http.StatusRequestHeaderFieldsTooLarge && errors.Is(err, syscall.ECONNRESET) {
				return
			}
			if err != nil {
				t.Fatalf("connection not closed after the answer: %v", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
			if err != nil {
				t.Fatalf("answer %q: %v", all, err)
			}
			if resp.StatusCode != tc.status || !resp.Close {
				t.Errorf("answer %q, want status %d and Connection: close", all, tc.status)
			}
		})
	}
}
