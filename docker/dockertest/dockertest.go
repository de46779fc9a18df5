// Package dockertest gives tests the private Docker daemon that .ci/dockerd.sh starts: its address and a client of it, skipping a test without one unless BUILDSLAVE_INTEGRATION=1, which fails it.
package dockertest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/buildslave/buildslave/internal/integration"
)

// DefaultHost is where .ci/dockerd.sh's daemon listens.
const DefaultHost = "unix:///run/buildslave-dockerd/docker.sock"

// Host is the Docker host tests use: $BUILDSLAVE_DOCKER_HOST, or
// DefaultHost.
func Host() string {
	if h := os.Getenv("BUILDSLAVE_DOCKER_HOST"); h != "" {
		return h
	}
	return DefaultHost
}

// NeedOrSkip skips t for want of a real peer, or fails it when
// BUILDSLAVE_INTEGRATION=1.
func NeedOrSkip(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(integration.EnvVar) == "1" {
		t.Fatalf(integration.EnvVar+"=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// LockFile is the lock that keeps a test restarting the daemon apart
// from the tests using it, in other packages' test processes too.
var LockFile = filepath.Join(os.TempDir(), "buildslave-dockertest.lock")

// Client is a client of Host, closed when t ends; it skips t (or fails
// it, in CI) when no daemon answers there. Until t ends it holds
// LockFile shared: RestartingClient waits for it.
func Client(t testing.TB) *client.Client {
	t.Helper()
	return newClient(t, syscall.LOCK_SH)
}

// RestartingClient is Client for a test that restarts the daemon: it
// holds LockFile exclusively, so no test of another package uses the
// daemon meanwhile.
func RestartingClient(t testing.TB) *client.Client {
	t.Helper()
	return newClient(t, syscall.LOCK_EX)
}

func newClient(t testing.TB, how int) *client.Client {
	t.Helper()
	f, err := os.OpenFile(LockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // and the lock with it
	cli, err := client.New(client.WithHost(Host()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		NeedOrSkip(t, "no Docker daemon at %s: %v (run .ci/dockerd.sh to start one)", Host(), err)
	}
	return cli
}

// BridgeGateway is the host's address on Docker's default bridge
// (docker0), where a container on that network reaches the master.
func BridgeGateway(t testing.TB) string {
	t.Helper()
	ifi, err := net.InterfaceByName("docker0")
	if err != nil {
		t.Fatalf("no docker0 bridge: %v", err)
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Fatalf("docker0 has no IPv4 address: %v", addrs)
	return ""
}
