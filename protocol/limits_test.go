package protocol

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (any of 127.0.0.0/8).
func clientFrom(t testing.TB, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// dialerFrom is a wire.Dialer whose connections come from the loopback
// address ip.
func dialerFrom(ip string) *wire.Dialer {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &wire.Dialer{NetDialContext: d.DialContext}
}

// guessOnce sends one login with password as s1 and returns the status
// and whether the server closes the connection after it.
func guessOnce(t testing.TB, client *http.Client, url, password string) (status int, closing bool) {
	req, _ := http.NewRequest("GET", "http"+strings.TrimPrefix(url, "ws")+"/", nil)
	req.Header.Set("Authorization", wire.BasicAuth("s1", password))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Close
}

func TestGuesserIsCutOffAndCannotReuseItsConnection(t *testing.T) {
	ms := newMaster(t, nil)
	guesser := clientFrom(t, "127.0.0.20")
	for i := range slave.DefaultRefusalBurst {
		if status, closing := guessOnce(t, guesser, ms.url, fmt.Sprint("guess", i)); status != http.StatusUnauthorized || !closing {
			t.Fatalf("guess %d: status %d, closing %v", i, status, closing)
		}
	}
	for _, pw := range []string{"one-more", "pw"} {
		if status, closing := guessOnce(t, guesser, ms.url, pw); status != http.StatusTooManyRequests || !closing {
			t.Errorf("login with %q over budget: status %d, closing %v", pw, status, closing)
		}
	}
	tr, err := dialerFrom("127.0.0.21").Dial(t.Context(), ms.url, "s1", "pw")
	if err != nil {
		t.Fatalf("a slave from another address: %v", err)
	}
	tr.Close()
}

func TestOneConnectionPerNameIsPastLoginAndAttaching(t *testing.T) {
	ms := newMaster(t, nil)
	tr, err := ms.dial(t, "s1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	first := newStallingSlave(t, tr, "get_worker_info") // stays mid-attach
	<-first.events                                      // the master's first print: it is attaching

	// Any number of others with the password get no reader: refused before
	// the upgrade.
	for range 20 {
		_, err := ms.dial(t, "s1", "pw")
		var he *wire.HandshakeError
		if !errors.As(err, &he) || he.StatusCode != http.StatusConflict {
			t.Fatalf("dial while s1 attaches: %v", err)
		}
	}
	if lines := ms.logs.Matching("slave connection refused", "slave=s1", "still attaching"); len(lines) != 1 {
		t.Errorf("want the first of the refusals logged at once:\n%s", ms.logs.String())
	}

	// The first connection dies mid-attach: the name is free again.
	first.w.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		tr, err := ms.dial(t, "s1", "pw")
		if err == nil {
			newFakeSlave(t, tr)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial after the first connection died: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b, err := ms.m.Acquire(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	b.Release()
}

func TestAttachedSlavesDoNotCountAgainstTheLimiter(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			ms := newMaster(t, nil)
			// A cap of one: a second connection before login would close the first.
			lim := &connlimit.Limiter{MaxPending: 1, Logger: slog.New(slog.DiscardHandler)}
			srv := &Server{Handler: ms.h, Limiter: lim}
			d, scheme := &wire.Dialer{}, "ws"
			if useTLS {
				certSrv := httptest.NewTLSServer(http.NotFoundHandler()) // borrow its certificate
				defer certSrv.Close()
				srv.TLSConfig = &tls.Config{Certificates: certSrv.TLS.Certificates}
				d.TLSConfig, scheme = certSrv.Client().Transport.(*http.Transport).TLSClientConfig, "wss"
			}
			addr := startServer(t, srv)
			var conns []*Conn
			for _, name := range []string{"s1", "s2"} {
				tr, err := d.Dial(t.Context(), scheme+"://"+addr.String()+"/", name, "pw")
				if err != nil {
					t.Fatal(err)
				}
				newFakeSlave(t, tr)
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				b, err := ms.m.Acquire(ctx, name)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, b.Conn().(*Conn))
				b.Release()
			}
			for _, c := range conns {
				if err := c.Print(t.Context(), "still here"); err != nil {
					t.Errorf("%s: %v", c.Name(), err)
				}
			}
			if n := lim.Pending(); n != 0 {
				t.Errorf("%d connections pending with both slaves attached", n)
			}
		})
	}
}
