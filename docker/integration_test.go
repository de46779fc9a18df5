package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// defaultTestHost is where .ci/dockerd.sh's daemon listens.
const defaultTestHost = "unix:///run/buildslave-dockerd/docker.sock"

// testImage is the tag of the image the tests build: our static Go slave
// and a probe program, FROM scratch.
const testImage = "buildslave-docker-test:latest"

// testHost is the Docker host the tests use: $BUILDSLAVE_DOCKER_HOST, or
// .ci/dockerd.sh's socket.
func testHost() string {
	if h := os.Getenv("BUILDSLAVE_DOCKER_HOST"); h != "" {
		return h
	}
	return defaultTestHost
}

// needOrSkip skips the test for want of a real peer, or fails it when
// BUILDSLAVE_INTEGRATION=1.
func needOrSkip(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("BUILDSLAVE_INTEGRATION") == "1" {
		t.Fatalf("BUILDSLAVE_INTEGRATION=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// adminClient is the test's own client of the daemon; it skips the test
// (or fails it in CI) when no daemon answers.
func adminClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.WithHost(testHost()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		needOrSkip(t, "no Docker daemon at %s: %v (run .ci/dockerd.sh to start one)", testHost(), err)
	}
	return cli
}

var (
	imageOnce sync.Once
	imageErr  error
)

// needImage builds testImage once per test run, offline, through the
// API's image build: a context holding `CGO_ENABLED=0 go build` of
// examples/slave and of testdata/hostname, and a Dockerfile FROM scratch.
func needImage(t *testing.T, cli *client.Client) {
	t.Helper()
	imageOnce.Do(func() { imageErr = buildImage(cli) })
	if imageErr != nil {
		t.Fatalf("building %s: %v", testImage, imageErr)
	}
}

func buildImage(cli *client.Client) error {
	dir, err := os.MkdirTemp("", "docker-test-image")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goCmd); err != nil {
		goCmd = "go"
	}
	for out, pkg := range map[string]string{"slave": "../examples/slave", "hostname": "./testdata/hostname"} {
		cmd := exec.Command(goCmd, "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	add := func(name string, mode int64, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body))}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	dockerfile := "FROM scratch\nCOPY slave /slave\nCOPY hostname /bin/hostname\nENTRYPOINT [\"/slave\", \"-basedir\", \"/build\"]\n"
	if err := add("Dockerfile", 0o644, []byte(dockerfile)); err != nil {
		return err
	}
	for _, f := range []string{"slave", "hostname"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if err := add(f, 0o755, b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := cli.ImageBuild(ctx, &ctxTar, client.ImageBuildOptions{Tags: []string{testImage}, Remove: true, ForceRemove: true})
	if err != nil {
		return err
	}
	defer res.Body.Close()
	out, err := readBuildStream(res.Body)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// bridgeGateway is the host's address on Docker's default bridge, where
// a container on that network reaches the master.
func bridgeGateway(t *testing.T) string {
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

// master is a slave.Manager with a PB server on addr, the master side a
// container's slave attaches to.
type master struct {
	m    *slave.Manager
	addr string // host:port the PB server listens on
}

func newTestSlave(t *testing.T, name string, opts ...Option) *Slave {
	t.Helper()
	s, err := New(name, "unused-password", testHost(), append([]Option{Image(testImage), Logger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.DiscardHandler)
}

// assertNoneLeft checks that no container carries masterID, through the
// driver's List and through the daemon's own listing by label.
func assertNoneLeft(t *testing.T, cli *client.Client, s *Slave, masterID string) {
	t.Helper()
	if got, err := s.List(t.Context(), masterID); err != nil || len(got) != 0 {
		t.Errorf("List(%s) = %+v, %v; want none", masterID, got, err)
	}
	res, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", LabelMaster+"="+masterID)})
	if err != nil || len(res.Items) != 0 {
		t.Errorf("docker ps -a --filter label=%s=%s: %+v, %v; want none", LabelMaster, masterID, res.Items, err)
	}
}

// eventually polls cond every 50 ms until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
	}
}

func uniqueMaster(t *testing.T) string {
	return "test-" + strings.ToLower(rand.Text()[:10]) + "-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
}

// runProbe runs testdata/hostname as a build step and returns its output.
func runProbe(ctx context.Context, t *testing.T, b *slave.Build) string {
	t.Helper()
	conn := b.Conn().(remote.Commander)
	cmd, err := conn.Start(ctx, remote.Request{Name: "shell", Builder: "probe", Args: map[string]any{
		"workdir": "build", "command": []any{"/bin/hostname"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rc := -1
	for u := range cmd.Updates() {
		switch u.Key {
		case "stdout", "stderr":
			out.WriteString(u.Text)
		case "rc":
			rc = u.RC
		}
	}
	if err := cmd.Wait(ctx); err != nil || rc != 0 {
		t.Fatalf("the probe: rc %d, %v; output %q", rc, err, out.String())
	}
	return out.String()
}

// TestBuildInAContainer substantiates a Docker latent slave through the
// Lifecycle, as a build asks for it: the container (on the default
// bridge, with its own host name) attaches over PB, runs a build step
// that sees the container's host name and an empty build directory, and
// is removed build_wait_timeout after the build.
func TestBuildInAContainer(t *testing.T) {
	cli := adminClient(t)
	needImage(t, cli)
	masterID := uniqueMaster(t)
	gw := bridgeGateway(t)
	// The master listens on the bridge's gateway only.
	mst := newMasterFor(t, gw, func(addr string) *Slave {
		return newTestSlave(t, "dock1", MasterFQDN(addr), Hostname("dock1-box"), BuildWaitTimeout(500*time.Millisecond),
			WithHostConfig(HostConfig{Memory: 256 << 20, CPUs: 1, ExtraHosts: []string{"master.test:" + gw}}),
			Volumes(t.TempDir()+":/shared:ro"))
	})
	ds := mst.driver
	lc, err := latent.New(mst.m, latent.Config{MasterID: masterID, CheckInterval: 200 * time.Millisecond, ReapInterval: -1, Logger: testLogger(t)}, ds)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	t0 := time.Now()
	b, err := mst.m.Acquire(ctx, "dock1")
	if err != nil {
		t.Fatal(err)
	}
	attached := time.Now()
	inst := instanceOf(t, lc, "dock1")
	info, err := cli.ContainerInspect(ctx, inst.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := info.Container
	startedAt, _ := time.Parse(time.RFC3339Nano, c.State.StartedAt)
	t.Logf("Acquire → attached in %v; container started → attached in %v", attached.Sub(t0), attached.Sub(startedAt))

	// What the container was given.
	if c.Config.Labels[LabelMaster] != masterID || c.Config.Labels[LabelSlave] != "dock1" {
		t.Errorf("labels %v", c.Config.Labels)
	}
	for _, kv := range []string{"BUILDMASTER=" + gw, "BUILDMASTER_PORT=" + port(mst.addr), "WORKERNAME=dock1", "BUILDSLAVE_MASTER=" + mst.addr, "BUILDSLAVE_NAME=dock1"} {
		if !slices.Contains(c.Config.Env, kv) {
			t.Errorf("environment lacks %s: %q", kv, c.Config.Env)
		}
	}
	if !slices.ContainsFunc(c.Config.Env, func(kv string) bool { return strings.HasPrefix(kv, "WORKERPASS=") && len(kv) > len("WORKERPASS=") }) {
		t.Errorf("no WORKERPASS: %q", c.Config.Env)
	}
	hc := c.HostConfig
	if hc.Memory != 256<<20 || hc.NanoCPUs != 1e9 || !slices.Contains(hc.ExtraHosts, "master.test:"+gw) || len(hc.Binds) != 1 || !strings.HasSuffix(hc.Binds[0], ":/shared:ro") || hc.Privileged {
		t.Errorf("host config: memory %d, nano cpus %d, extra hosts %v, binds %v, privileged %v", hc.Memory, hc.NanoCPUs, hc.ExtraHosts, hc.Binds, hc.Privileged)
	}
	if err := ds.Check(ctx, inst); err != nil {
		t.Errorf("Check of the running container: %v", err)
	}

	out := runProbe(ctx, t, b)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "dock1-box" {
		t.Errorf("the step saw host name %q, want the container's dock1-box", lines[0])
	}
	if host, _ := os.Hostname(); lines[0] == host {
		t.Errorf("the step ran on the master's host %q", host)
	}
	if len(lines) != 1 {
		t.Errorf("the build directory is not empty: %q", lines[1:])
	}
	b.Release()
	released := time.Now()

	eventually(t, 30*time.Second, "the container is removed after build_wait_timeout", func() bool {
		_, err := cli.ContainerInspect(ctx, inst.ID, client.ContainerInspectOptions{})
		return cerrdefs.IsNotFound(err)
	})
	t.Logf("container removed %v after the build (build_wait_timeout 500ms)", time.Since(released))
	if err := ds.Check(ctx, inst); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Check after the stop: %v", err)
	}
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoneLeft(t, cli, ds, masterID)
}

// testMaster is a master whose one latent slave is a Docker slave
// pointed at the master's PB address.
type testMaster struct {
	*master
	driver *Slave
}

// newMasterFor starts a master listening on host and makes its Docker
// slave with mk, which gets the PB address.
func newMasterFor(t *testing.T, host string, mk func(addr string) *Slave) *testMaster {
	t.Helper()
	// The slave's configuration (name, password) is fixed before the
	// address is known: listen first, then build the driver, then the
	// manager around the listener.
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ds := mk(l.Addr().String())
	quiet := testLogger(t)
	m, err := slave.NewManager(slave.Config{Logger: quiet}, ds.Slave())
	if err != nil {
		t.Fatal(err)
	}
	srv := &pb.Server{Manager: m, Builders: []string{"probe"}, Logger: quiet}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
		m.Close()
	})
	return &testMaster{master: &master{m: m, addr: l.Addr().String()}, driver: ds}
}

// instanceOf returns the instance of a latent slave once the Lifecycle
// knows it: a fast container may attach before Start has returned.
func instanceOf(t *testing.T, lc *latent.Lifecycle, name string) latent.Instance {
	t.Helper()
	var inst latent.Instance
	eventually(t, 30*time.Second, name+" has an instance", func() bool {
		st, _ := lc.Status(name)
		inst = st.Instance
		return inst.ID != ""
	})
	return inst
}

func port(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

// TestHostNetworkAttach starts containers on the host's network, where
// the master is 127.0.0.1, and measures container start → attached.
func TestHostNetworkAttach(t *testing.T) {
	cli := adminClient(t)
	needImage(t, cli)
	masterID := uniqueMaster(t)
	mst := newMasterFor(t, "127.0.0.1", func(addr string) *Slave {
		return newTestSlave(t, "dock-host", MasterFQDN(addr), WithHostConfig(HostConfig{NetworkMode: "host"}), BuildWaitTimeout(0))
	})
	lc, err := latent.New(mst.m, latent.Config{MasterID: masterID, CheckInterval: 200 * time.Millisecond, ReapInterval: -1, Logger: testLogger(t)}, mst.driver)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var waits []time.Duration
	for range 5 {
		b, err := mst.m.Acquire(ctx, "dock-host")
		if err != nil {
			t.Fatal(err)
		}
		attached := time.Now()
		inst := instanceOf(t, lc, "dock-host")
		info, err := cli.ContainerInspect(ctx, inst.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		startedAt, _ := time.Parse(time.RFC3339Nano, info.Container.State.StartedAt)
		waits = append(waits, attached.Sub(startedAt))
		if host, _ := os.Hostname(); !strings.HasPrefix(runProbe(ctx, t, b), host) {
			t.Errorf("on the host's network the container has the host's name")
		}
		b.Release()
		eventually(t, 30*time.Second, "the container is removed after the build", func() bool {
			_, err := cli.ContainerInspect(ctx, inst.ID, client.ContainerInspectOptions{})
			return cerrdefs.IsNotFound(err)
		})
	}
	slices.Sort(waits)
	t.Logf("container started → attached over PB on 127.0.0.1: p50 %v, max %v (%d starts)", waits[len(waits)/2], waits[len(waits)-1], len(waits))
	if waits[len(waits)/2] > 2*time.Second {
		t.Errorf("p50 container start → attached %v, want under 2 s", waits[len(waits)/2])
	}
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoneLeft(t, cli, mst.driver, masterID)
}

// TestContainerThatExitsFailsFast: a container whose command exits at
// once fails the substantiation through Check, with its log in the
// error, and is removed.
func TestContainerThatExitsFailsFast(t *testing.T) {
	cli := adminClient(t)
	needImage(t, cli)
	masterID := uniqueMaster(t)
	mst := newMasterFor(t, "127.0.0.1", func(addr string) *Slave {
		// The entrypoint is our slave; an unknown flag makes it print its
		// usage and exit with status 2.
		return newTestSlave(t, "dock-dies", MasterFQDN(addr), Command("-no-such-flag"), WithHostConfig(HostConfig{NetworkMode: "host"}))
	})
	lc, err := latent.New(mst.m, latent.Config{MasterID: masterID, CheckInterval: 100 * time.Millisecond, ReapInterval: -1, Logger: testLogger(t)}, mst.driver)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	t0 := time.Now()
	err = lc.Substantiate(t.Context(), "dock-dies")
	took := time.Since(t0)
	if !errors.Is(err, latent.ErrDied) || !strings.Contains(err.Error(), "exit code 2") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("Substantiate = %v, want ErrDied with exit code 2 and the slave's complaint", err)
	}
	t.Logf("failed after %v: %v", took, err)
	if took > 10*time.Second {
		t.Errorf("the failure took %v", took)
	}
	eventually(t, 30*time.Second, "quarantined after the failure", func() bool {
		st, _ := lc.Status("dock-dies")
		return st.State == latent.Quarantined
	})
	eventually(t, 30*time.Second, "the dead container is removed", func() bool {
		got, err := mst.driver.List(t.Context(), masterID)
		return err == nil && len(got) == 0
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoneLeft(t, cli, mst.driver, masterID)
}

// TestStartStopListCheck drives the driver directly: labels, List by
// master, Stop of an instance already gone, Stop refusing a container
// that is not ours, a missing image without autopull.
func TestStartStopListCheck(t *testing.T) {
	cli := adminClient(t)
	needImage(t, cli)
	ma, mb := uniqueMaster(t)+"-a", uniqueMaster(t)+"-b"
	// Nobody listens on port 1: the slaves keep retrying, which is all
	// this test needs of them.
	s1 := newTestSlave(t, "lister1", MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"}))
	s2 := newTestSlave(t, "lister2", MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"}))
	req := func(name, master string) latent.StartRequest {
		return latent.StartRequest{Name: name, Password: rand.Text(), MasterID: master}
	}
	i1, err := s1.Start(t.Context(), req("lister1", ma))
	if err != nil {
		t.Fatal(err)
	}
	i2, err := s2.Start(t.Context(), req("lister2", ma))
	if err != nil {
		t.Fatal(err)
	}
	i3, err := s1.Start(t.Context(), req("lister1", mb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s1.Stop(context.Background(), i3) })

	// A new driver, as after a master's restart, finds them by label.
	reaper := newTestSlave(t, "lister1")
	got, err := reaper.List(t.Context(), ma)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b latent.Instance) int { return strings.Compare(a.Slave, b.Slave) })
	if len(got) != 2 || got[0].ID != i1.ID || got[1].ID != i2.ID || !got[0].Started.Equal(i1.Started) || got[0].MasterID != ma {
		t.Fatalf("List(a) = %+v, want %+v and %+v", got, i1, i2)
	}
	if err := s1.Check(t.Context(), i1); err != nil {
		t.Errorf("Check of a running container: %v", err)
	}
	// Stop refuses an instance whose labels do not match.
	forged := i2
	forged.MasterID = mb
	if err := reaper.Stop(t.Context(), forged); err == nil || !strings.Contains(err.Error(), "not ours") {
		t.Errorf("Stop of another master's container: %v", err)
	}
	for _, inst := range got {
		if err := reaper.Stop(t.Context(), inst); err != nil {
			t.Error(err)
		}
		if err := reaper.Stop(t.Context(), inst); err != nil {
			t.Errorf("a second Stop: %v", err)
		}
	}
	assertNoneLeft(t, cli, reaper, ma)
	if got, err := reaper.List(t.Context(), mb); err != nil || len(got) != 1 || got[0].ID != i3.ID {
		t.Errorf("List(b) = %+v, %v", got, err)
	}
	if err := s1.Stop(t.Context(), i3); err != nil {
		t.Fatal(err)
	}
	assertNoneLeft(t, cli, reaper, mb)

	t.Run("missing image without autopull", func(t *testing.T) {
		s := newTestSlave(t, "noimage", Image("buildslave-no-such-image:never"))
		_, err := s.Start(t.Context(), req("noimage", ma))
		if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "autopull is off") {
			t.Errorf("Start = %v", err)
		}
		assertNoneLeft(t, cli, s, ma)
	})
	t.Run("a container of that name that is not ours", func(t *testing.T) {
		name := containerName("squatted", ma)
		res, err := cli.ContainerCreate(t.Context(), client.ContainerCreateOptions{Name: name, Image: testImage})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
		s := newTestSlave(t, "squatted")
		if _, err := s.Start(t.Context(), req("squatted", ma)); err == nil || !strings.Contains(err.Error(), "not ours") {
			t.Errorf("Start = %v, want a refusal", err)
		}
		if _, err := cli.ContainerInspect(t.Context(), res.ID, client.ContainerInspectOptions{}); err != nil {
			t.Errorf("the foreign container: %v", err)
		}
	})
	t.Run("a refused create leaves nothing", func(t *testing.T) {
		s := newTestSlave(t, "badnet", WithHostConfig(HostConfig{NetworkMode: "no-such-network"}))
		_, err := s.Start(t.Context(), req("badnet", ma))
		if err == nil {
			t.Fatal("Start on a network that does not exist succeeded")
		}
		t.Log(err)
		assertNoneLeft(t, cli, s, ma)
	})
}

// TestManyAtOnce substantiates 50 Docker latent slaves at once (host
// network, one PB port): all attach, all are removed after their builds,
// and the test logs the total time and the master's CPU time.
func TestManyAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 50 containers")
	}
	cli := adminClient(t)
	needImage(t, cli)
	const n = 50
	masterID := uniqueMaster(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var drivers []latent.LatentSlave
	var slaves []*slave.Slave
	var names []string
	for i := range n {
		name := fmt.Sprintf("many%02d", i)
		d := newTestSlave(t, name, MasterFQDN(l.Addr().String()), WithHostConfig(HostConfig{NetworkMode: "host"}))
		drivers = append(drivers, d)
		slaves = append(slaves, d.Slave())
		names = append(names, name)
	}
	quiet := testLogger(t)
	m, err := slave.NewManager(slave.Config{Logger: quiet}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	srv := &pb.Server{Manager: m, Builders: []string{"probe"}, Logger: quiet}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() { srv.Close(); <-served; m.Close() }()
	lc, err := latent.New(m, latent.Config{MasterID: masterID, CheckInterval: time.Second, ReapInterval: -1, Logger: quiet}, drivers...)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cpu0 := cpuTime()
	t0 := time.Now()
	builds := make([]*slave.Build, n)
	errs := make([]error, n)
	attached := make([]time.Time, n)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			builds[i], errs[i] = m.Acquire(ctx, name)
			attached[i] = time.Now()
		})
	}
	wg.Wait()
	took, cpu := time.Since(t0), cpuTime()-cpu0
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d containers asked for at once: all attached in %v; master CPU %v", n, took, cpu)
	var waits []time.Duration
	for i, name := range names {
		inst := instanceOf(t, lc, name)
		info, err := cli.ContainerInspect(ctx, inst.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		startedAt, _ := time.Parse(time.RFC3339Nano, info.Container.State.StartedAt)
		waits = append(waits, attached[i].Sub(startedAt))
	}
	slices.Sort(waits)
	// The daemon stamps StartedAt once its start call returns, when the
	// slave may already run: under load an attach can precede it.
	t.Logf("attached − the container's State.StartedAt: p50 %v, max %v", waits[n/2], waits[n-1])
	if waits[n-1] > 2*time.Second {
		t.Errorf("a slave attached %v after its container started, want under 2 s", waits[n-1])
	}
	for _, b := range builds {
		b.Release()
	}
	eventually(t, 2*time.Minute, "every container removed after its build", func() bool {
		got, err := drivers[0].(*Slave).List(ctx, masterID)
		return err == nil && len(got) == 0
	})
	t.Logf("all %d removed %v after the builds", n, time.Since(t0)-took)
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoneLeft(t, cli, drivers[0].(*Slave), masterID)
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
