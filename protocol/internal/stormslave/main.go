// Command stormslave dials many minimal slaves at once at a master, for the attach-storm benchmark of package protocol.
//
// It reads "go" on stdin, dials -n slaves named PREFIX0 ... all at once,
// answers the attach sequence on each, prints "attached" once every slave
// has received the master's final print, and exits when stdin closes.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buildslave/buildslave/protocol/wire"
)

func main() {
	url := flag.String("url", "", "master's ws:// URL")
	n := flag.Int("n", 1000, "number of slaves")
	prefix := flag.String("prefix", "s", "slave name prefix")
	password := flag.String("password", "pw", "password of every slave")
	flag.Parse()

	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	if !in.Scan() {
		return
	}
	var attached atomic.Int64
	allAttached := make(chan struct{})
	var wg sync.WaitGroup
	conns := make([]*wire.Conn, *n)
	d := &wire.Dialer{WebSocketConfig: wire.WebSocketConfig{WriteTimeout: time.Minute}}
	for i := range *n {
		wg.Go(func() {
			name := fmt.Sprintf("%s%d", *prefix, i)
			t, err := d.Dial(context.Background(), *url, name, *password)
			if err != nil {
				log.Fatalf("dial %s: %v", name, err)
			}
			prints := 0
			var c *wire.Conn
			c = wire.NewConn(t, func(_ context.Context, req wire.Message) (any, error) {
				switch req.Op() {
				case "print":
					if prints++; prints == 2 && attached.Add(1) == int64(*n) {
						close(allAttached)
					}
				case "get_worker_info":
					return map[string]any{"basedir": "/b/" + name, "version": "storm", "numcpus": 1}, nil
				case "start_command":
					id, _ := req.String("command_id")
					wg.Go(func() { listdir(c, id) })
				}
				return nil, nil
			})
			conns[i] = c
			c.Serve()
		})
	}
	<-allAttached
	fmt.Println("attached")
	for in.Scan() {
	}
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
}

// listdir answers the master's listdir of the base directory: every
// builder directory is there already.
func listdir(c *wire.Conn, id string) {
	ctx := c.Context()
	c.Call(ctx, "update", map[string]any{"command_id": id, "args": []any{[]any{"files", []any{"b1"}}, []any{"rc", 0}}})
	c.Call(ctx, "complete", map[string]any{"command_id": id, "args": nil})
}
