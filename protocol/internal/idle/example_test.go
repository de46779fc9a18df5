package idle_test

import (
	"fmt"
	"net"

	"github.com/buildslave/buildslave/protocol/internal/idle"
)

// A reader parks its connection between messages; the poller resumes it
// on a new goroutine once the peer's bytes are there.
func Example() {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	client, _ := net.Dial("tcp", l.Addr().String())
	defer client.Close()
	server, _ := l.Accept()
	defer server.Close()

	w := idle.Watch(server) // nil where connections cannot be parked
	defer w.Close()
	got := make(chan string)
	read := func() {
		b := make([]byte, 16)
		n, _ := server.Read(b)
		got <- string(b[:n])
	}
	if !w.Park(read) {
		go read() // no poller here: wait on a goroutine
	}
	client.Write([]byte("keepalive"))
	fmt.Println(<-got)
	// Output: keepalive
}
