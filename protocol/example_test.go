package protocol_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"time"

	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// Example runs a master that accepts slave "bot-linux", attaches a tiny Go
// slave to it and runs a shell command there.
func Example() {
	bot, _ := slave.New("bot-linux", "linuxpassword", slave.MaxBuilds(2))
	quiet := slog.New(slog.DiscardHandler)
	manager, err := slave.NewManager(slave.Config{Logger: quiet}, bot)
	if err != nil {
		log.Fatal(err)
	}
	defer manager.Close()

	// The master's endpoint: stock slaves dial ws://127.0.0.1:PORT/.
	server := &protocol.Server{Handler: &protocol.Handler{Manager: manager, Logger: quiet}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(l) }()
	defer func() { server.Shutdown(context.Background()); <-served }()

	stop := runTinySlave("ws://"+l.Addr().String()+"/", "bot-linux", "linuxpassword")
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	build, err := manager.Acquire(ctx, "bot-linux")
	if err != nil {
		log.Fatal(err)
	}
	defer build.Release()
	fmt.Println("attached:", build.Slave(), "running", build.Conn().Info().Version)

	// The same call runs a command over either transport.
	cmd, err := remote.Start(ctx, build.Conn(), remote.Request{Name: "shell", Args: map[string]any{
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
	// attached: bot-linux running 0.1
	// stdout: "hello\n"
	// rc: 0
	// error: <nil>
}

// runTinySlave connects a slave that answers the attach sequence and
// pretends every shell command printed "hello". It returns a function that
// disconnects it.
func runTinySlave(url, name, password string) (stop func()) {
	d := &wire.Dialer{}
	t, err := d.Dial(context.Background(), url, name, password)
	if err != nil {
		log.Fatal(err)
	}
	var c *wire.Conn
	done := make(chan struct{})
	c = wire.NewConn(t, func(ctx context.Context, req wire.Message) (any, error) {
		switch req.Op() {
		case "print", "keepalive", "set_worker_settings", "interrupt_command", "shutdown":
			return nil, nil
		case "get_worker_info":
			return map[string]any{"basedir": "/tmp", "version": "0.1", "numcpus": 1}, nil
		case "start_command":
			id, err := req.String("command_id")
			if err != nil {
				return nil, err
			}
			go func() { // a real slave would track this goroutine
				c.Call(ctx, "update", map[string]any{"command_id": id, "args": []any{
					[]any{"stdout", []any{"hello\n", []any{5}, []any{0.0}}}, []any{"rc", 0}}})
				c.Call(ctx, "complete", map[string]any{"command_id": id, "args": nil})
			}()
			return nil, nil
		}
		return nil, wire.UnknownOp(req.Op())
	})
	go func() { c.Serve(); close(done) }()
	return func() { c.Close(); <-done }
}
