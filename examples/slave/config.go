package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/buildslave/buildslave/client"
)

// The environment variables that configure the slave.
const (
	envMaster      = "BUILDSLAVE_MASTER"
	envName        = "BUILDSLAVE_NAME"
	envPassword    = "BUILDSLAVE_PASSWORD"
	envBasedir     = "BUILDSLAVE_BASEDIR"
	envTLS         = "BUILDSLAVE_TLS"
	envCA          = "BUILDSLAVE_CA"
	envMaxRefusals = "BUILDSLAVE_MAX_REFUSALS"
)

// parseConfig builds the slave's configuration from the command line and,
// for what the command line leaves out, the environment.
func parseConfig(args []string, lookup func(string) (string, bool), log *slog.Logger) (client.Config, error) {
	env := func(k string) string { v, _ := lookup(k); return v }
	envBool := func(k string) bool { b, _ := strconv.ParseBool(env(k)); return b }
	envInt := func(k string) int { n, _ := strconv.Atoi(env(k)); return n }

	fs := flag.NewFlagSet("slave", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := client.Config{Logger: log}
	fs.StringVar(&cfg.Master, "master", env(envMaster), "master `host:port` (or a ws:// or wss:// URL)")
	fs.StringVar(&cfg.Name, "name", env(envName), "slave `name`")
	fs.StringVar(&cfg.Password, "password", "", "slave password (visible in ps: prefer "+envPassword+")")
	fs.StringVar(&cfg.Basedir, "basedir", env(envBasedir), "base `directory` (holds info/ and the builds)")
	fs.BoolVar(&cfg.TLS, "tls", envBool(envTLS), "connect with wss:// (TLS)")
	ca := fs.String("ca", env(envCA), "PEM `file` of CA certificates the master's certificate must chain to")
	fs.IntVar(&cfg.MaxRefusals, "max-refusals", envInt(envMaxRefusals), "give up after `n` refusals in a row (0: never)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.Password != "" {
		log.Warn("the password was given on the command line, where other users can see it; use " + envPassword)
	} else {
		cfg.Password = env(envPassword)
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
