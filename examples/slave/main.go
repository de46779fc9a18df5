// Command slave is a Go build slave for a Buildbot-compatible master speaking msgpack_experimental_v7.
//
// Usage:
//
//	BUILDSLAVE_PASSWORD=secret slave -master 127.0.0.1:9989 -name bot-linux -basedir /var/lib/slave
//
// Every flag can also come from the environment (BUILDSLAVE_MASTER,
// BUILDSLAVE_NAME, BUILDSLAVE_PASSWORD, BUILDSLAVE_BASEDIR, BUILDSLAVE_TLS,
// BUILDSLAVE_CA, BUILDSLAVE_MAX_REFUSALS); flags win. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/buildslave/buildslave/client"
)

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT sets
// one: it makes the collector hand freed pages back promptly, which keeps
// the resident size under 10 MB even while a build floods its output.
const memoryLimit = 6 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parseConfig(args, os.LookupEnv, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "slave:", err)
		return 2
	}
	// The build's processes inherit our environment: keep the password out.
	os.Unsetenv(envPassword)
	s, err := client.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "slave:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("slave starting", "master", cfg.Master, "name", cfg.Name, "basedir", cfg.Basedir, "version", client.Version)
	switch err := s.Run(ctx); {
	case err == nil:
		log.Info("slave stopped: the master asked for a shutdown")
	case errors.Is(err, context.Canceled):
		log.Info("slave stopped by a signal")
	case errors.Is(err, client.ErrRefused):
		log.Error("slave gave up", "err", err)
		return 3
	default:
		log.Error("slave stopped", "err", err)
		return 1
	}
	return 0
}
