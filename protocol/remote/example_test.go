package remote_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"

	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// echoConn is a slave connection whose slave answers every command by
// printing its "command" argument: a transport in a few lines. Real ones
// are protocol.Conn and pb.Conn.
type echoConn struct {
	slave.Conn // the manager's side, unused here
	wg         sync.WaitGroup
}

func (c *echoConn) Start(ctx context.Context, req remote.Request) (*remote.Command, error) {
	cmd, progress, err := remote.New(ctx, req, context.Background(), func(context.Context, string) error { return nil })
	if err != nil {
		return nil, err
	}
	c.wg.Go(func() { // what the slave sends, as the connection's reader would deliver it
		progress.Deliver(remote.Update{Key: "stdout", Text: fmt.Sprint(req.Args["command"], "\n")})
		progress.Deliver(remote.Update{Key: "rc", RC: 0})
		progress.Finish(nil)
	})
	return cmd, nil
}

// Start runs a command on a build's connection, whatever transport the
// slave attached over: in a master, conn is build.Conn().
func ExampleStart() {
	ctx := context.Background()
	conn := &echoConn{}
	defer conn.wg.Wait()

	cmd, err := remote.Start(ctx, conn, remote.Request{Name: "shell", Args: map[string]any{
		"workdir": "/tmp", "command": "echo hello"}})
	if err != nil {
		log.Fatal(err)
	}
	for u := range cmd.Updates() {
		switch u.Key {
		case "stdout":
			fmt.Printf("stdout: %q\n", u.Text)
		case "rc":
			fmt.Println("rc:", u.RC)
		}
	}
	fmt.Println("error:", cmd.Wait(ctx))
	// Output:
	// stdout: "echo hello\n"
	// rc: 0
	// error: <nil>
}

// plainConn is a slave connection that runs no commands, as an in-memory
// test connection may be.
type plainConn struct{ slave.Conn }

// A connection that is not a Commander gets an error saying so, not a
// panic from a failed type assertion.
func ExampleStart_noCommands() {
	_, err := remote.Start(context.Background(), plainConn{}, remote.Request{Name: "shell"})
	fmt.Println(err)
	fmt.Println(errors.Is(err, remote.ErrNoCommands))
	// Output:
	// remote: remote_test.plainConn is not a remote.Commander: connection runs no remote commands
	// true
}
