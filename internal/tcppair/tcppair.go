// Package tcppair gives tests the two ends of a real TCP connection on
// loopback.
package tcppair

import (
	"net"
	"testing"
)

// New returns the server's and the client's ends of a new connection on
// 127.0.0.1; both are closed when the test ends.
func New(t testing.TB) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}
