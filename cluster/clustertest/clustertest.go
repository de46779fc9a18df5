// Package clustertest starts a real etcd server in-process for tests of code
// that uses package cluster.
package clustertest

import (
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ReadyTimeout bounds how long Start waits for the server to be ready.
const ReadyTimeout = 20 * time.Second

// Server is a single-member etcd server on loopback, in a temporary
// directory, stopped when the test ends.
type Server struct {
	// Endpoints are its client URLs, for cluster.Config.Endpoints.
	Endpoints []string
	etcd      *embed.Etcd
	stop      func() // closes etcd once: embed.Etcd.Close panics the second time
}

// Start starts the server on free loopback ports with its data in t.TempDir,
// logging errors only, and stops it in t.Cleanup. It fails the test if the
// server is not ready within ReadyTimeout.
func Start(t testing.TB) *Server {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "clustertest"
	cfg.Dir = t.TempDir()
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietLogger())
	client, peer := freeURL(t), freeURL(t)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("clustertest: starting etcd: %v", err)
	}
	srv := &Server{etcd: e, stop: sync.OnceFunc(e.Close)}
	t.Cleanup(srv.Stop)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("clustertest: etcd failed: %v", err)
	case <-time.After(ReadyTimeout):
		e.Server.Stop()
		t.Fatalf("clustertest: etcd not ready after %v", ReadyTimeout)
	}
	srv.Endpoints = []string{client.String()}
	return srv
}

// Stop stops the server before the test ends, to test what happens when etcd
// goes away; stopping it twice is harmless.
func (s *Server) Stop() { s.stop() }

// freeURL returns a loopback URL on a port free a moment ago.
func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("clustertest: finding a free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return url.URL{Scheme: "http", Host: addr}
}

// quietLogger logs errors to stderr, without the ones etcd logs on every
// normal Close ("mux: server closed" and the like).
func quietLogger() *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(os.Stderr)), zapcore.ErrorLevel)
	return zap.New(filterCore{core})
}

type filterCore struct{ zapcore.Core }

func (c filterCore) With(f []zapcore.Field) zapcore.Core { return filterCore{c.Core.With(f)} }

func (c filterCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c filterCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && closing(err.Error()) {
			return nil
		}
	}
	return c.Core.Write(e, fields)
}

func closing(msg string) bool {
	for _, s := range []string{"server closed", "Server closed", "closed network connection"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
