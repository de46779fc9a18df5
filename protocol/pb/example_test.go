package pb_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// Example runs a master that accepts slave "bot-linux" over Perspective
// Broker, attaches a tiny scripted PB slave to it (as a stock
// buildbot-worker would, on its default protocol) and runs a shell
// command there.
func Example() {
	bot, _ := slave.New("bot-linux", "linuxpassword")
	quiet := slog.New(slog.DiscardHandler)
	manager, err := slave.NewManager(slave.Config{Logger: quiet}, bot)
	if err != nil {
		log.Fatal(err)
	}
	defer manager.Close()

	// The master's PB port: stock slaves dial 127.0.0.1:PORT.
	server := &pb.Server{Manager: manager, Builders: []string{"hello"}, Logger: quiet}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(l) }()
	defer func() { server.Close(); <-served }()

	stop := runTinyPBSlave(l.Addr().String(), "bot-linux", "linuxpassword")
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
	cmd, err := remote.Start(ctx, build.Conn(), remote.Request{Name: "shell", Builder: "hello", Args: map[string]any{
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

// runTinyPBSlave connects a slave that answers the attach sequence and
// pretends every shell command printed "hello". It returns a function that
// disconnects it.
func runTinyPBSlave(addr, name, password string) (stop func()) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	b, err := pb.Connect(nc, pb.BrokerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() { b.Serve(); close(done) }()
	bot := &tinyBot{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Login(ctx, name, password, bot); err != nil {
		log.Fatal(err)
	}
	return func() { b.Close(); <-done; bot.commands.Wait() }
}

// tinyBot is the slave's bot object, which the master calls to set it up.
type tinyBot struct {
	commands sync.WaitGroup // the commands running
}

func (bot *tinyBot) Call(method string, args pb.Tuple, _ map[string]any) (any, error) {
	switch method {
	case "print":
		return nil, nil
	case "getWorkerInfo":
		return map[string]any{"basedir": "/tmp", "version": "0.1", "numcpus": 1,
			"worker_commands": map[string]any{"shell": "3.3"}}, nil
	case "setBuilderList": // [(name, directory), ...]: one builder object each
		builders := map[string]any{}
		for _, nd := range pb.AsList(args[0]) {
			name, _ := pb.Plain(pb.AsList(nd)[0]).(string)
			builders[name] = tinyBuilder{bot}
		}
		return builders, nil
	}
	return nil, pb.NoSuchMethod(method)
}

// tinyBuilder runs the commands of one builder.
type tinyBuilder struct{ bot *tinyBot }

func (b tinyBuilder) Call(method string, args pb.Tuple, _ map[string]any) (any, error) {
	if method != "startCommand" { // (step, id, name, args)
		return nil, pb.NoSuchMethod(method)
	}
	step, _ := args[0].(*pb.Ref)
	b.bot.commands.Go(func() { // a call must not wait for the peer: run it aside
		ctx := context.Background()
		update := func(u map[string]any) { step.Call(ctx, "update", pb.Tuple{[]any{[]any{u, 0}}}, nil) }
		update(map[string]any{"stdout": "hello\n"})
		update(map[string]any{"rc": 0})
		step.Call(ctx, "complete", pb.Tuple{nil}, nil)
	})
	return nil, nil
}
