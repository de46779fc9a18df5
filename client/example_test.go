package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// Example attaches our Go slave to a master built on this library, in the
// same process (a slave.Manager behind a Perspective Broker port, as a
// stock master listens), and runs a shell command on it.
func Example() {
	quiet := slog.New(slog.DiscardHandler)

	// The master: slave "bot-linux" may attach on a loopback PB port.
	bot, _ := slave.New("bot-linux", "linuxpassword")
	manager, err := slave.NewManager(slave.Config{Logger: quiet}, bot)
	if err != nil {
		log.Fatal(err)
	}
	defer manager.Close()
	server := &pb.Server{Manager: manager, Builders: []string{"hello"}, Logger: quiet}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(l) }()
	defer func() { server.Close(); <-served }()

	// The slave: it dials the master and stays attached until ctx ends.
	basedir, err := os.MkdirTemp("", "bot-linux")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(basedir)
	s, err := client.New(client.Config{
		Master:   l.Addr().String(), // "host:port": Perspective Broker
		Name:     "bot-linux",
		Password: "linuxpassword",
		Basedir:  basedir,
		Logger:   quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	// A build on it.
	build, err := manager.Acquire(ctx, "bot-linux")
	if err != nil {
		log.Fatal(err)
	}
	defer build.Release()
	fmt.Println("attached:", build.Slave(), "running", build.Conn().Info().Version)
	cmd, err := remote.Start(ctx, build.Conn(), remote.Request{Name: "shell", Builder: "hello", Args: map[string]any{
		"workdir": basedir, "command": []any{"echo", "hello"}}})
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
	// attached: bot-linux running buildslave-go 0.1
	// stdout: "hello\n"
	// rc: 0
	// error: <nil>
}

// A slave that stays attached to its master until it is interrupted, the
// master shuts it down, or the master refuses its password three times.
func ExampleSlave_Run() {
	s, err := client.New(client.Config{
		Master:      "127.0.0.1:9989",
		Name:        "bot-linux",
		Password:    os.Getenv("BUILDSLAVE_PASSWORD"),
		Basedir:     "/var/lib/buildslave",
		MaxRefusals: 3,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
