// Command master is a small CI master built on the buildslave library,
// the example a newcomer runs first:
//
//	go run ./examples/master                    # the embedded default.toml
//	go run ./examples/master -config master.toml
//
// It accepts stock buildbot-worker and Go slaves over Buildbot's
// Perspective Broker protocol (the stock slaves' default) and its
// msgpack_experimental_v7 protocol, starts latent slaves (local processes,
// EC2, libvirt, Docker) when a build wants them, runs builders' shell and upload
// steps, and serves a status page with a force button, JSON and Prometheus
// metrics. SIGHUP re-reads the configuration; SIGINT and SIGTERM drain
// running builds and stop every latent instance before it exits.
//
// "master slave ..." runs the Go slave of package client with the flags of
// examples/slave: the default's latent slaves are this executable.
// See README.md.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/buildslave/buildslave/client/slavecmd"
	"github.com/buildslave/buildslave/examples/master/internal/config"
)

// defaultConfig is the configuration without -config: nothing to install,
// no cloud account.
//
//go:embed default.toml
var defaultConfig []byte

// defaultName names the embedded configuration in messages.
const defaultName = "default.toml (embedded)"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "slave" {
		os.Exit(slavecmd.Run(os.Args[2:], os.Stderr))
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, nil))
}

// options are the command line's settings.
type options struct {
	config                      string
	once                        bool
	logJSON                     bool
	listen, listenMsgpack, http string
	drain, stop                 time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("master", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "configuration `file` (TOML); the embedded default if empty")
	fs.BoolVar(&o.once, "once", false, "exit once the at_start builds have finished and every latent slave has stopped")
	fs.BoolVar(&o.logJSON, "log-json", false, "log JSON lines instead of text")
	fs.StringVar(&o.listen, "listen", "", "Perspective Broker's `host:port` (Buildbot's default protocol), instead of the configuration's master.listen")
	fs.StringVar(&o.listenMsgpack, "listen-msgpack", "", "msgpack's `host:port`, instead of the configuration's master.listen_msgpack")
	fs.StringVar(&o.http, "http", "", "status page `host:port`, instead of the configuration's master.http")
	fs.DurationVar(&o.drain, "drain-timeout", time.Minute, "on SIGINT/SIGTERM, how long running builds may finish before they are aborted")
	fs.DurationVar(&o.stop, "stop-timeout", 5*time.Minute, "on SIGINT/SIGTERM, how long stopping the latent instances may take")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: master [flags]   (master slave -h: the Go slave's flags)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// load reads the configuration the options name, with their overrides.
func (o options) load() (*config.Config, error) {
	var cfg *config.Config
	var err error
	if o.config == "" {
		cfg, err = config.Parse(defaultName, defaultConfig, os.LookupEnv)
	} else {
		cfg, err = config.Load(o.config)
	}
	if err != nil {
		return nil, err
	}
	if o.listen != "" {
		cfg.Listen = o.listen
	}
	if o.listenMsgpack != "" {
		cfg.ListenMsgpack = o.listenMsgpack
	}
	if o.http != "" {
		cfg.HTTP = o.http
	}
	cfg.LogJSON = cfg.LogJSON || o.logJSON
	return cfg, nil
}
