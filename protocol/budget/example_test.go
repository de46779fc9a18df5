package budget_test

import (
	"context"
	"fmt"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
)

// A connection reserves what a message may take before taking it, keeps
// what it took while the message is handled, then gives it back. A master
// with several transports gives them one Budget, as
// protocol.Handler.WebSocket.Budget and pb.Server.Broker.Budget.
func Example() {
	b := budget.New(32<<20, 30*time.Second)
	r := b.Reserve(context.Background())
	if err := r.Acquire(18 << 20); err != nil { // before decoding a large frame
		fmt.Println(err)
		return
	}
	r.Shrink(3 << 20) // what the decoded message took
	fmt.Println(b.InUse()>>20, "MiB in use while it is handled")
	r.Release()
	fmt.Println(b.InUse(), "once handled")
	// Output:
	// 3 MiB in use while it is handled
	// 0 once handled
}
