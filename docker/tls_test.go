package docker

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/buildslave/buildslave/docker/dockertest"
	"github.com/buildslave/buildslave/internal/testcert"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/latent"
)

// startTLSDaemon starts a dockerd of its own that listens on a 127.0.0.1
// port with --tlsverify and certs's server certificate, and stops it when
// t ends; it returns the daemon's tcp:// address. Its containers use the
// host's network; its default bridge is one of its own, made here (with
// --bridge none, dockerd would delete docker0, the test daemon's).
func startTLSDaemon(t *testing.T, certs testcert.Files) string {
	t.Helper()
	const dockerd = "/usr/sbin/dockerd"
	if _, err := os.Stat(dockerd); err != nil || os.Geteuid() != 0 {
		dockertest.NeedOrSkip(t, "a TLS dockerd needs %s (apt-get install docker.io) and root: %v, uid %d", dockerd, err, os.Geteuid())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		dockertest.NeedOrSkip(t, "a TLS dockerd's bridge needs ip (apt-get install iproute2): %v", err)
	}
	bridge := "bstls" + strings.ToLower(rand.Text()[:6])
	for _, args := range [][]string{{"link", "add", "name", bridge, "type", "bridge"}, {"addr", "add", "192.0.2.1/24", "dev", bridge}, {"link", "set", bridge, "up"}} {
		if out, err := exec.Command(ipCmd, args...).CombinedOutput(); err != nil {
			exec.Command(ipCmd, "link", "del", bridge).Run()
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	// Deleted after dockerd has stopped (cleanups run last first).
	t.Cleanup(func() { exec.Command(ipCmd, "link", "del", bridge).Run() })
	// A short directory: containerd's sockets live under it.
	dir, err := os.MkdirTemp("", "dockerd-tls")
	if err != nil {
		t.Fatal(err)
	}
	var log testlog.Buffer
	cmd := exec.Command(dockerd, "--data-root", filepath.Join(dir, "root"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "-H", "tcp://"+addr, "--tlsverify", "--tlscacert", certs.CA,
		"--tlscert", certs.ServerCert, "--tlskey", certs.ServerKey, "--bridge", bridge, "--iptables=false")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		mounts, _ := os.ReadFile("/proc/mounts")
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				syscall.Unmount(f[1], syscall.MNT_DETACH)
			}
		}
		os.RemoveAll(dir)
		if t.Failed() {
			t.Logf("the TLS dockerd's log:\n%s", log.String())
		}
	})
	return "tcp://" + addr
}

// TestTLSDockerHost runs a container through a tcp:// docker_host with
// TLS on both sides (tls=: the CA, a client certificate and its key):
// the image is built, the container attaches, runs a step and is
// removed, all over TLS. A client without a certificate, and one that
// does not trust the daemon's CA, are refused.
func TestTLSDockerHost(t *testing.T) {
	certs := testcert.Write(t, t.TempDir())
	host := startTLSDaemon(t, certs)
	clientTLS := client.WithTLSClientConfig(certs.CA, certs.ClientCert, certs.ClientKey)
	admin, err := client.New(client.WithHost(host), clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	eventually(t, 60*time.Second, "the TLS dockerd answers", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := admin.Ping(ctx, client.PingOptions{})
		return err == nil
	})
	if err := buildImage(admin); err != nil {
		t.Fatalf("building %s over TLS: %v", testImage, err)
	}

	masterID := uniqueMaster(t)
	tlsOpt := WithTLS(TLS{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey})
	mst := newMasterFor(t, "127.0.0.1", func(addr string) *Slave {
		s, err := New("dock-tls", "unused", host, Image(testImage), tlsOpt, MasterFQDN(addr), WithHostConfig(HostConfig{NetworkMode: "host"}), Logger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
	lc, err := latent.New(mst.m, latent.Config{MasterID: masterID, CheckInterval: 200 * time.Millisecond, ReapInterval: -1, Logger: testLogger(t)}, mst.driver)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b, err := mst.m.Acquire(ctx, "dock-tls")
	if err != nil {
		t.Fatal(err)
	}
	if host, _ := os.Hostname(); !strings.HasPrefix(runProbe(ctx, t, b), host+"\n") {
		t.Error("the step did not run on the host's network")
	}
	inst := instanceOf(t, lc, "dock-tls")
	b.Release()
	eventually(t, 30*time.Second, "the container is removed after the build", func() bool {
		got, err := mst.driver.List(ctx, masterID)
		return err == nil && len(got) == 0
	})
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := admin.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil || len(res.Items) != 0 {
		t.Errorf("containers left on the TLS daemon (the last was %s): %+v, %v", inst.ID, res.Items, err)
	}

	req := latent.StartRequest{Name: "refused", Password: rand.Text(), MasterID: masterID}
	for _, c := range []struct {
		name, want string
		tls        TLS
	}{
		{"no client certificate", "tls: bad certificate", TLS{CAFile: certs.CA}},
		{"another CA", "certificate signed by unknown authority", TLS{CAFile: testcert.Write(t, t.TempDir()).CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}},
	} {
		s, err := New("refused", "unused", host, Image(testImage), WithTLS(c.tls), MasterFQDN("127.0.0.1:1"), Logger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Start(ctx, req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Start = %v, want %q", c.name, err, c.want)
		}
		s.Close()
	}
}
