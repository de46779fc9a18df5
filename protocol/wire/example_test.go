package wire_test

import (
	"context"
	"fmt"

	"github.com/buildslave/buildslave/protocol/wire"
)

// ExampleConn connects two peers over an in-memory pipe: each answers the
// other's requests through its Handler and calls the other with Call.
func ExampleConn() {
	a, b := wire.Pipe()
	master := wire.NewConn(a, func(ctx context.Context, req wire.Message) (any, error) {
		return nil, wire.UnknownOp(req.Op())
	})
	slave := wire.NewConn(b, func(ctx context.Context, req wire.Message) (any, error) {
		if req.Op() != "print" {
			return nil, wire.UnknownOp(req.Op())
		}
		msg, err := req.String("message")
		if err != nil {
			return nil, err // the master gets an exception and the connection ends
		}
		fmt.Println("slave prints:", msg)
		return nil, nil
	})
	done := make(chan error, 2)
	go func() { done <- master.Serve() }()
	go func() { done <- slave.Serve() }()

	_, err := master.Call(context.Background(), "print", map[string]any{"message": "attached"})
	fmt.Println("print:", err)
	_, err = master.Call(context.Background(), "frobnicate", nil)
	fmt.Println("frobnicate:", err)

	master.Close()
	<-done
	<-done
	// Output:
	// slave prints: attached
	// print: <nil>
	// frobnicate: remote error: unknown op "frobnicate"
}

// ExampleDecodeMessage decodes a frame and reads its typed fields.
func ExampleDecodeMessage() {
	frame, _ := wire.AppendMessage(nil, "update_read_file", 7, map[string]any{"command_id": "3", "length": 16384})
	msg, err := wire.DecodeMessage(frame)
	if err != nil {
		panic(err)
	}
	n, _ := msg.Int("length")
	fmt.Println(msg.Op(), msg.Seq(), n)
	_, err = msg.Int("command_id")
	fmt.Println(err)
	// Output:
	// update_read_file 7 16384
	// malformed message: field "command_id": want int, got str
}
