package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/buildslave/buildslave/examples/master/internal/termsafe"
)

// run is the master's life: it reads the configuration, starts, serves
// until ctx ends, SIGINT or SIGTERM (or with -once, until the at_start
// builds are done and the latent slaves stopped), reconfigures on SIGHUP,
// and shuts down. It returns the exit status: 0, 1 if the master failed
// (a latent instance it could not stop, a failed build with -once, or,
// in a cluster, its lease ended while etcd was unreachable), 2
// for bad flags or configuration. started, if set, is called once the
// master serves.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, started func(*master)) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "master:", err)
		return 2
	}
	cfg, err := o.load()
	if err != nil {
		fmt.Fprintf(stderr, "master: invalid configuration, not starting:\n%v\n", err)
		return 2
	}
	out, errw := &syncWriter{w: stdout}, &syncWriter{w: stderr}
	log := newLogger(errw, cfg.LogJSON)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	m, err := start(cfg, log, out, errw)
	if err != nil {
		log.Error("master did not start", "err", err)
		return 1
	}
	if started != nil {
		started(m)
	}
	onceCtx, cancelOnce := context.WithCancel(ctx)
	defer cancelOnce()
	once := make(chan bool, 1)
	if o.once {
		go func() { once <- m.awaitStartupBuilds(onceCtx) }() // joined below: cancelOnce, then <-once
	}
	code := 0
loop:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				m.reload(o.load)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break loop
		case ok := <-once:
			if !ok {
				code = 1
			}
			once = nil
			break loop
		case <-m.clusterLost():
			log.Error("cluster: etcd answers again, but this master's lease ended: shutting down with exit status 1, for a restart to rejoin the cluster")
			code = 1
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	cancelOnce()
	if once != nil && o.once {
		<-once
	}
	if err := m.shutdown(o.drain, o.stop); err != nil {
		log.Error("shutdown failed", "err", err)
		fmt.Fprintf(stderr, "master: shutdown failed:\n%v\n", err)
		return 1
	}
	return code
}

// newLogger logs to w as text, or JSON lines. Neither writes a control
// character of a value raw: the text handler quotes them as Go does, and
// escapeAttr escapes those JSON leaves as they are (DEL, C1 controls).
func newLogger(w io.Writer, json bool) *slog.Logger {
	if json {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: escapeAttr}))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// escapeAttr escapes the control characters of a string or error value,
// which may come from a slave.
func escapeAttr(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value.Any().(type) {
	case string:
		a.Value = slog.StringValue(termsafe.Escape(v))
	case error:
		a.Value = slog.StringValue(termsafe.Escape(v.Error()))
	}
	return a
}

// syncWriter serialises the writes of the logger, the progress lines and
// the local slaves' output.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
