package connlimit_test

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"time"

	"github.com/buildslave/buildslave/protocol/connlimit"
)

// A transport wraps its listener and admits each connection once the peer
// has logged in; until then the connection is pending, and pending
// connections beyond the caps are closed.
func Example() {
	lim := &connlimit.Limiter{MaxPendingPerIP: 2, Logger: slog.New(slog.DiscardHandler)}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	l := lim.Listen(raw)
	defer l.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	accept := func() net.Conn {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		return c
	}

	c1, c2 := dial(), dial()
	defer c1.Close()
	defer c2.Close()
	s1, s2 := accept(), accept()
	defer s1.Close()
	defer s2.Close()
	fmt.Println("pending:", lim.Pending())

	fmt.Println("admitted:", connlimit.Admit(s1)) // s1's peer logged in
	fmt.Println("pending:", lim.Pending())

	c3 := dial()
	defer c3.Close()
	s3 := accept()
	defer s3.Close()
	fmt.Println("pending:", lim.Pending())

	// A third pending connection from 127.0.0.1 is closed at accept: its
	// peer reads the end of the stream.
	accepting := make(chan struct{})
	go func() { l.Accept(); close(accepting) }() // returns once l is closed
	defer func() { l.Close(); <-accepting }()
	c4 := dial()
	defer c4.Close()
	c4.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c4.Read(make([]byte, 1))
	fmt.Println("fourth:", err == io.EOF, "pending:", lim.Pending())
	// Output:
	// pending: 2
	// admitted: true
	// pending: 1
	// pending: 2
	// fourth: true pending: 2
}
