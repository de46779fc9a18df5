package client_test

import (
	"context"
	"errors"
	"log"
	"os"
	"os/signal"

	"github.com/buildslave/buildslave/client"
)

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
