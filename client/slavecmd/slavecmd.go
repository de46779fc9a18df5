// Package slavecmd is the Go slave's command line: the program
// examples/slave, and the example master's "slave" subcommand, so that the
// master's own executable can be its local latent slaves' program.
package slavecmd

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/buildslave/buildslave/client"
)

// The environment variables that configure the slave.
const (
	envMaster      = "BUILDSLAVE_MASTER"
	envProtocol    = "BUILDSLAVE_PROTOCOL"
	envName        = "BUILDSLAVE_NAME"
	envPassword    = "BUILDSLAVE_PASSWORD"
	envBasedir     = "BUILDSLAVE_BASEDIR"
	envTLS         = "BUILDSLAVE_TLS"
	envCA          = "BUILDSLAVE_CA"
	envMaxRefusals = "BUILDSLAVE_MAX_REFUSALS"
)

// Buildbot's names for the same settings, which images made for
// Buildbot's DockerLatentWorker and other latent workers set: read after
// ours, so that such an image runs our slave unchanged.
const (
	envBuildmaster     = "BUILDMASTER"      // the master's host
	envBuildmasterPort = "BUILDMASTER_PORT" // its port, 9989 if unset
	envWorkerName      = "WORKERNAME"
	envWorkerPass      = "WORKERPASS"
)

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT sets
// one: it makes the collector hand freed pages back promptly, which keeps
// the resident size under 10 MB even while a build floods its output.
const memoryLimit = 6 << 20

// Run runs the slave configured by args (flags win) and the environment
// until a signal or the master's shutdown request, and returns the exit
// status: 0 stopped, 1 failed, 2 bad configuration, 3 refused.
func Run(args []string, stderr io.Writer) int {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := parse(args, os.LookupEnv, log, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "slave:", err)
		return 2
	}
	os.Unsetenv(envPassword) // the build's processes inherit our environment
	os.Unsetenv(envWorkerPass)
	s, err := client.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "slave:", err)
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

// parse builds the slave's configuration from the command line and, for
// what it leaves out, the environment.
func parse(args []string, lookup func(string) (string, bool), log *slog.Logger, stderr io.Writer) (client.Config, error) {
	env := func(k string) string { v, _ := lookup(k); return v }
	buildbot := func(ours, theirs string) string {
		if v, ok := lookup(ours); ok {
			return v
		}
		return env(theirs)
	}
	master := env(envMaster)
	if host := env(envBuildmaster); master == "" && host != "" {
		master = net.JoinHostPort(host, cmp.Or(env(envBuildmasterPort), "9989"))
	}
	tlsDefault, _ := strconv.ParseBool(env(envTLS))
	refusals, _ := strconv.Atoi(env(envMaxRefusals))

	fs := flag.NewFlagSet("slave", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := client.Config{Logger: log}
	fs.StringVar(&cfg.Master, "master", master, "master `host:port` (or a ws:// or wss:// URL); several, separated by commas, are tried in turn")
	fs.StringVar(&cfg.Protocol, "protocol", env(envProtocol), "`pb` (every Buildbot master's default) or msgpack (default: msgpack for a ws:// URL, else pb)")
	fs.StringVar(&cfg.Name, "name", buildbot(envName, envWorkerName), "slave `name`")
	fs.StringVar(&cfg.Password, "password", "", "slave password (visible in ps: prefer "+envPassword+")")
	fs.StringVar(&cfg.Basedir, "basedir", env(envBasedir), "base `directory` (holds info/ and the builds)")
	fs.BoolVar(&cfg.TLS, "tls", tlsDefault, "connect with wss:// (TLS)")
	ca := fs.String("ca", env(envCA), "PEM `file` of CA certificates the master's certificate must chain to")
	fs.IntVar(&cfg.MaxRefusals, "max-refusals", refusals, "give up after `n` refusals in a row (0: never)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.Password != "" {
		log.Warn("the password was given on the command line, where other users can see it; use " + envPassword)
	} else {
		cfg.Password = buildbot(envPassword, envWorkerPass)
	}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			return cfg, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("%s holds no PEM certificate", *ca)
		}
		cfg.TLS = true
	}
	return cfg, nil
}
