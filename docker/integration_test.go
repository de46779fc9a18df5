package docker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
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

	"github.com/buildslave/buildslave/docker/dockertest"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// testImage is the tag of the image the tests build: our static Go slave
// and a probe program, FROM scratch.
const testImage = "buildslave-docker-test:latest"

var (
	imageOnce sync.Once
	imageErr  error
)

// needImage builds testImage once per test run, offline, through the
// API's image build: a context holding `CGO_ENABLED=0 go build` of
// examples/slave and of testdata/hostname, and a Dockerfile FROM scratch.
func needImage(t testing.TB, cli *client.Client) {
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

// master is a slave.Manager with a PB server on addr, the master side a
// container's slave attaches to.
type master struct {
	m    *slave.Manager
	addr string // host:port the PB server listens on
}

func newTestSlave(t *testing.T, name string, opts ...Option) *Slave {
	t.Helper()
	s, err := New(name, "unused-password", dockertest.Host(), append([]Option{Image(testImage), Logger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testLogger(testing.TB) *slog.Logger {
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
	cli := dockertest.Client(t)
	needImage(t, cli)
	masterID := uniqueMaster(t)
	gw := dockertest.BridgeGateway(t)
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
	cli := dockertest.Client(t)
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
	cli := dockertest.Client(t)
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
	cli := dockertest.Client(t)
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
	cli := dockertest.Client(t)
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

// TestDockerfile builds images through the driver: from a Dockerfile's
// text with build arguments and a target (shared by concurrent starts),
// from a custom gzipped context, and a failing build.
func TestDockerfile(t *testing.T) {
	cli := dockertest.Client(t)
	needImage(t, cli)
	masterID := uniqueMaster(t)
	req := func(name string) latent.StartRequest {
		return latent.StartRequest{Name: name, Password: rand.Text(), MasterID: masterID}
	}
	removeImage := func(ref string) {
		cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true})
	}
	dockerfile := "FROM " + testImage + " AS base\nARG GREETING=none\nLABEL org.test.greeting=$GREETING\n" +
		"FROM base AS final\nLABEL org.test.stage=final\n# " + rand.Text() + "\n"

	t.Run("text, buildargs, target", func(t *testing.T) {
		var drivers []*Slave
		for i := range 3 {
			drivers = append(drivers, newTestSlave(t, fmt.Sprintf("built%d", i), Image(""), Dockerfile(dockerfile),
				BuildArgs(map[string]string{"GREETING": "hello"}), Target("base"),
				MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"})))
		}
		image := drivers[0].cfg.image
		if !strings.HasPrefix(image, "buildslave-built0:") || strings.TrimPrefix(drivers[1].cfg.image, "buildslave-built1:") != strings.TrimPrefix(image, "buildslave-built0:") {
			t.Fatalf("built image names %q %q", image, drivers[1].cfg.image)
		}
		// The three slaves' names differ, so do their tags; all three
		// build, each once, concurrently.
		defer func() {
			for _, d := range drivers {
				removeImage(d.cfg.image)
			}
		}()
		insts := make([]latent.Instance, len(drivers))
		errs := make([]error, len(drivers))
		var wg sync.WaitGroup
		for i, d := range drivers {
			wg.Go(func() { insts[i], errs[i] = d.Start(t.Context(), req(d.Slave().Name())) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		img, err := cli.ImageInspect(t.Context(), image)
		if err != nil {
			t.Fatal(err)
		}
		if l := img.Config.Labels; l["org.test.greeting"] != "hello" || l["org.test.stage"] != "" {
			t.Errorf("image labels %v: want greeting=hello from the build argument, no stage label (target base)", l)
		}
		for i, d := range drivers {
			if err := d.Stop(t.Context(), insts[i]); err != nil {
				t.Error(err)
			}
		}
		assertNoneLeft(t, cli, drivers[0], masterID)
	})

	t.Run("one image shared by concurrent starts", func(t *testing.T) {
		tag := "buildslave-docker-test-shared:" + strings.ToLower(rand.Text()[:8])
		defer removeImage(tag)
		var drivers []*Slave
		counter := &countingHandler{}
		for i := range 5 {
			drivers = append(drivers, newTestSlave(t, fmt.Sprintf("shared%d", i), Image(tag), Dockerfile(dockerfile),
				MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"}), Logger(slog.New(counter))))
		}
		insts := make([]latent.Instance, len(drivers))
		errs := make([]error, len(drivers))
		var wg sync.WaitGroup
		for i, d := range drivers {
			wg.Go(func() { insts[i], errs[i] = d.Start(t.Context(), req(d.Slave().Name())) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if n := counter.count("docker: building image"); n != 1 {
			t.Errorf("5 concurrent starts built the image %d times, want once", n)
		}
		for i, d := range drivers {
			if err := d.Stop(t.Context(), insts[i]); err != nil {
				t.Error(err)
			}
		}
		assertNoneLeft(t, cli, drivers[0], masterID)
	})

	t.Run("custom context", func(t *testing.T) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		tw := tar.NewWriter(zw)
		for name, body := range map[string]string{"Dockerfile": "FROM " + testImage + "\nCOPY marker /marker\n", "marker": "here\n"} {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))})
			io.WriteString(tw, body)
		}
		tw.Close()
		zw.Close()
		path := filepath.Join(t.TempDir(), "context.tar.gz")
		if err := os.WriteFile(path, gz.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		tag := "buildslave-docker-test-custom:" + strings.ToLower(rand.Text()[:8])
		defer removeImage(tag)
		d := newTestSlave(t, "custom", Image(tag), Dockerfile(path), CustomContext(true), Encoding("gzip"),
			MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"}))
		inst, err := d.Start(t.Context(), req("custom"))
		if err != nil {
			t.Fatal(err)
		}
		if st, err := cli.ContainerStatPath(t.Context(), inst.ID, client.ContainerStatPathOptions{Path: "/marker"}); err != nil {
			t.Errorf("the context's file is not in the container: %+v, %v", st, err)
		}
		if err := d.Stop(t.Context(), inst); err != nil {
			t.Fatal(err)
		}
		assertNoneLeft(t, cli, d, masterID)
	})

	t.Run("a failing build", func(t *testing.T) {
		d := newTestSlave(t, "badbuild", Image(""), Dockerfile("FROM "+testImage+"\nCOPY no-such-file /x\n"))
		_, err := d.Start(t.Context(), req("badbuild"))
		if err == nil || !strings.Contains(err.Error(), "building image") || !strings.Contains(err.Error(), "no-such-file") {
			t.Errorf("Start = %v, want the build's complaint", err)
		}
		assertNoneLeft(t, cli, d, masterID)
	})
}

// countingHandler counts log messages.
type countingHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = make(map[string]int)
	}
	h.n[r.Message]++
	return nil
}

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// TestLeftoversOfACrashedMasterAreReaped: containers started under a
// master id and never stopped (the master died) are found by label and
// removed when a master with that id starts again (latent.New reaps).
func TestLeftoversOfACrashedMasterAreReaped(t *testing.T) {
	cli := dockertest.Client(t)
	needImage(t, cli)
	masterID := uniqueMaster(t)
	crashed := newTestSlave(t, "phoenix", MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"}))
	if _, err := crashed.Start(t.Context(), latent.StartRequest{Name: "phoenix", Password: rand.Text(), MasterID: masterID}); err != nil {
		t.Fatal(err)
	}
	// A container of another master on the same host stays.
	other := uniqueMaster(t)
	otherInst, err := crashed.Start(t.Context(), latent.StartRequest{Name: "phoenix", Password: rand.Text(), MasterID: other})
	if err != nil {
		t.Fatal(err)
	}
	defer crashed.Stop(context.Background(), otherInst)
	crashed.Close() // the master is gone; its container runs on

	restarted := newTestSlave(t, "phoenix", MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"}))
	m, err := slave.NewManager(slave.Config{Logger: testLogger(t)}, restarted.Slave())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var reaped []string
	var mu sync.Mutex
	lc, err := latent.New(m, latent.Config{MasterID: masterID, ReapInterval: -1, Logger: testLogger(t), Observe: func(ev latent.Event) {
		if ev.Reaped {
			mu.Lock()
			reaped = append(reaped, ev.Instance)
			mu.Unlock()
		}
	}}, restarted)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	assertNoneLeft(t, cli, restarted, masterID)
	mu.Lock()
	if len(reaped) != 1 {
		t.Errorf("reaped %v, want the one leftover", reaped)
	}
	mu.Unlock()
	if got, err := restarted.List(t.Context(), other); err != nil || len(got) != 1 || got[0].ID != otherInst.ID {
		t.Errorf("another master's container: List = %+v, %v", got, err)
	}
}

// TestDaemonRestartMidBuild restarts the dockerd of .ci/dockerd.sh while
// a container is attached: the build learns the loss, the container is
// removed once the daemon is back (the Lifecycle retries the stop), and
// the next build gets a fresh container.
func TestDaemonRestartMidBuild(t *testing.T) {
	cli := dockertest.RestartingClient(t)
	needImage(t, cli)
	dir := os.Getenv("BUILDSLAVE_DOCKERD_DIR")
	if dir == "" {
		dir = "/run/buildslave-dockerd"
	}
	b, err := os.ReadFile(filepath.Join(dir, "dockerd.pid"))
	if err != nil || os.Getenv("BUILDSLAVE_DOCKER_HOST") != "" && os.Getenv("BUILDSLAVE_DOCKER_HOST") != "unix://"+filepath.Join(dir, "docker.sock") {
		dockertest.NeedOrSkip(t, "no dockerd started by .ci/dockerd.sh in %s to restart: %v", dir, err)
	}
	script, err := filepath.Abs("../.ci/dockerd.sh")
	if err != nil {
		t.Fatal(err)
	}
	masterID := uniqueMaster(t)
	mst := newMasterFor(t, "127.0.0.1", func(addr string) *Slave {
		return newTestSlave(t, "survivor", MasterFQDN(addr), WithHostConfig(HostConfig{NetworkMode: "host"}))
	})
	lc, err := latent.New(mst.m, latent.Config{MasterID: masterID, CheckInterval: 200 * time.Millisecond, ReapInterval: -1, Logger: testLogger(t)}, mst.driver)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	build, err := mst.m.Acquire(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	first := instanceOf(t, lc, "survivor")

	var pid int
	fmt.Sscan(string(b), &pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "dockerd exits", func() bool { return syscall.Kill(pid, 0) != nil })
	select {
	case <-build.Context().Done():
		t.Logf("the build learned the loss: %v", context.Cause(build.Context()))
	case <-time.After(30 * time.Second):
		t.Error("the build did not learn that its container went away")
	}
	build.Release()
	// With the daemon down, driver calls fail instead of hanging.
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := mst.driver.List(dctx, masterID); err == nil {
		t.Error("List with dockerd down succeeded")
	}
	dcancel()
	if out, err := exec.Command(script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	restarted := time.Now()
	eventually(t, 90*time.Second, "the first container is removed once dockerd is back", func() bool {
		_, err := cli.ContainerInspect(ctx, first.ID, client.ContainerInspectOptions{})
		return cerrdefs.IsNotFound(err)
	})
	t.Logf("first container removed %v after dockerd came back", time.Since(restarted))
	eventually(t, 90*time.Second, "the latent slave is stopped", func() bool {
		st, _ := lc.Status("survivor")
		return st.State == latent.Stopped || st.State == latent.Quarantined
	})
	// The next build waits out any back-off and gets a fresh container.
	build, err = mst.m.Acquire(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	if second := instanceOf(t, lc, "survivor"); second.ID == first.ID {
		t.Error("the second build reused the first container")
	}
	build.Release()
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoneLeft(t, cli, mst.driver, masterID)
}

// TestVolumesLogsAndPulls: Stop removes the container's anonymous
// volumes (and leaves named ones); followStartupLogs logs the container's
// output; autopull of an image no registry has fails the start cleanly.
func TestVolumesLogsAndPulls(t *testing.T) {
	cli := dockertest.Client(t)
	needImage(t, cli)
	masterID := uniqueMaster(t)
	req := func(name string) latent.StartRequest {
		return latent.StartRequest{Name: name, Password: rand.Text(), MasterID: masterID}
	}

	t.Run("anonymous volumes go, named ones stay", func(t *testing.T) {
		named := "buildslave-test-named-" + strings.ToLower(rand.Text()[:8])
		defer cli.VolumeRemove(context.Background(), named, client.VolumeRemoveOptions{Force: true})
		tag := "buildslave-docker-test-volume:" + strings.ToLower(rand.Text()[:8])
		defer cli.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true})
		d := newTestSlave(t, "vols", Image(tag), Dockerfile("FROM "+testImage+"\nVOLUME /anon\n"), Volumes(named+":/named"),
			MasterFQDN("127.0.0.1:1"), WithHostConfig(HostConfig{NetworkMode: "none"}))
		inst, err := d.Start(t.Context(), req("vols"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := cli.ContainerInspect(t.Context(), inst.ID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var anon string
		for _, mp := range info.Container.Mounts {
			if mp.Destination == "/anon" {
				anon = mp.Name
			}
		}
		if anon == "" {
			t.Fatalf("no anonymous volume on /anon: %+v", info.Container.Mounts)
		}
		if err := d.Stop(t.Context(), inst); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.VolumeInspect(t.Context(), anon, client.VolumeInspectOptions{}); !cerrdefs.IsNotFound(err) {
			t.Errorf("the anonymous volume %s after Stop: %v", anon, err)
		}
		if _, err := cli.VolumeInspect(t.Context(), named, client.VolumeInspectOptions{}); err != nil {
			t.Errorf("the named volume %s after Stop: %v", named, err)
		}
		assertNoneLeft(t, cli, d, masterID)
	})

	t.Run("followStartupLogs", func(t *testing.T) {
		counter := &countingHandler{}
		d := newTestSlave(t, "chatty", Command("-no-such-flag"), FollowStartupLogs(true), Logger(slog.New(counter)),
			WithHostConfig(HostConfig{NetworkMode: "none"}))
		inst, err := d.Start(t.Context(), req("chatty"))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the container's output is logged", func() bool { return counter.count("docker: container output") > 3 })
		if err := d.Stop(t.Context(), inst); err != nil {
			t.Fatal(err)
		}
		d.Close() // waits for the follower
		assertNoneLeft(t, cli, d, masterID)
	})

	t.Run("autopull of an image no registry has", func(t *testing.T) {
		d := newTestSlave(t, "puller", Image("buildslave-no-such-image-anywhere:never"), AutoPull(true))
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := d.Start(ctx, req("puller"))
		if err == nil || !strings.Contains(err.Error(), "pulling image") {
			t.Errorf("Start = %v, want the pull's failure", err)
		}
		t.Log(err)
		assertNoneLeft(t, cli, d, masterID)
	})
}
