package keepalive_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/buildslave/buildslave/keepalive"
)

// slaveConn is a connection whose slave answers the first few keepalives
// and then goes silent, as a slave behind a dead network link does.
type slaveConn struct{ answers int }

func (c *slaveConn) Keepalive(ctx context.Context) error {
	if c.answers == 0 {
		<-ctx.Done() // no reply
		return ctx.Err()
	}
	c.answers--
	return nil
}

// A keepalive every interval (keepalive_interval; the slave manager runs
// one Loop per attached slave): each reply is a sign of life, and a reply
// that does not come within the bound reports the connection lost.
func Example() {
	lost := make(chan error, 1)
	l := keepalive.Start(&slaveConn{answers: 2}, 10*time.Millisecond, 20*time.Millisecond,
		func() { fmt.Println("alive") },
		func(err error) { lost <- err })
	defer l.Stop()

	err := <-lost
	fmt.Println("lost:", err)
	fmt.Println(errors.Is(err, keepalive.ErrNoReply))
	// Output:
	// alive
	// alive
	// lost: keepalive: no reply within 20ms
	// true
}

// With no timeout given, a reply must come within half the interval, at
// most a minute: for the default keepalive_interval of an hour, a minute.
func ExampleDefaultTimeout() {
	fmt.Println(keepalive.DefaultTimeout(time.Hour))
	fmt.Println(keepalive.DefaultTimeout(10 * time.Second))
	// Output:
	// 1m0s
	// 5s
}

// An interval of zero or less is keepalive_interval=None: no keepalive is
// ever sent.
func ExampleStart_disabled() {
	l := keepalive.Start(&slaveConn{}, 0, 0,
		func() { fmt.Println("alive") },
		func(err error) { fmt.Println("lost:", err) })
	l.Stop()
	fmt.Println("nothing sent")
	// Output: nothing sent
}
