package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/buildslave/buildslave/docker"
	"github.com/buildslave/buildslave/docker/dockertest"
	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/internal/config"
	"github.com/buildslave/buildslave/examples/master/status"
)

// readmeImageDir is where the README's shell lines build the image; the
// tests build it in a directory of their own instead.
const readmeImageDir = "/tmp/slave-image"

// readmeDocker returns the shell lines and the TOML stanza of the
// README's "Docker latent slaves" section, as written; the top-level
// README must show the same.
func readmeDocker(t *testing.T) (shell, stanza string) {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Docker latent slaves\n")
	m := regexp.MustCompile("(?s)```sh\n(.*?)```.*?```toml\n(.*?)```").FindStringSubmatch(section)
	if !ok || m == nil {
		t.Fatal("README.md has no Docker latent slaves section with a sh and a toml block")
	}
	top, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range []string{"```sh\n" + m[1] + "```", "```toml\n" + m[2] + "```"} {
		if !strings.Contains(string(top), block) {
			t.Errorf("the top-level README.md lacks the Docker section's block:\n%s", block)
		}
	}
	return m[1], m[2]
}

var (
	readmeImageOnce sync.Once
	readmeImageErr  error
)

// needReadmeImage runs the README's shell lines once per test run, at the
// top of the repository, against the tests' Docker daemon: they build
// the image the README's stanza names.
func needReadmeImage(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		dockertest.NeedOrSkip(t, "no /bin/busybox for the image's /bin/sh (apt-get install busybox-static; .ci/dockerd.sh does): %v", err)
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		dockertest.NeedOrSkip(t, "no docker command (apt-get install docker.io; .ci/dockerd.sh does): %v", err)
	}
	shell, _ := readmeDocker(t)
	readmeImageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slave-image")
		if err != nil {
			readmeImageErr = err
			return
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.ReplaceAll(shell, readmeImageDir, dir))
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockertest.Host(), "GOFLAGS=",
			"PATH="+filepath.Join(runtime.GOROOT(), "bin")+":"+filepath.Dir(docker)+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			readmeImageErr = fmt.Errorf("the README's shell lines: %v\n%s", err, out)
		}
	})
	if readmeImageErr != nil {
		t.Fatal(readmeImageErr)
	}
}

// containersOf lists the containers labelled with masterID, running or
// not.
func containersOf(t *testing.T, cli *client.Client, masterID string) []string {
	t.Helper()
	res, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", docker.LabelMaster+"="+masterID)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range res.Items {
		ids = append(ids, c.ID)
	}
	return ids
}

// masterTable is the [master] table of a Docker test's master: PB on a
// port of pbHost, the rest on loopback, its basedir the test's.
func masterTable(t *testing.T, pbHost, masterID string) string {
	return fmt.Sprintf("[master]\nlisten = \"%s:0\"\nlisten_msgpack = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nmaster_id = %q\nbasedir = %q\n",
		pbHost, masterID, t.TempDir())
}

// probe is the steps' shell: the host name, the build directory's
// entries (none: it is new), and whether / is the image's (FROM scratch:
// no /usr) rather than the master's host.
const probe = `hostname; ls -A; test -e /usr || echo in-the-image`

// printed is what a shell step's command printed: its output without the
// slave's header (the command, its directory, ...) and elapsedTime line.
func printed(output string) string {
	_, after, _ := strings.Cut(output, "using PTY: False\n")
	body, _, _ := strings.Cut(after, "elapsedTime=")
	return body
}

// TestDockerLatentSlaves forces builds on two Docker latent slaves of the
// example master, against a real Docker daemon, with the image that the
// README's shell lines build: docker1 is the README's stanza as written
// (the host's network), docker2 is on the default bridge with a host name
// of its own, a memory limit, an extra host and a volume. Each build runs
// in its container (docker2's limit, host and volume seen from inside),
// which is removed build_wait_timeout after it; a reconfiguration gives
// docker2 a new host name for its next build.
func TestDockerLatentSlaves(t *testing.T) {
	cli := dockertest.Client(t)
	needReadmeImage(t)
	_, stanza := readmeDocker(t)
	gw := dockertest.BridgeGateway(t)
	masterID := "docker-test-" + strings.ToLower(rand.Text()[:10])
	shared := t.TempDir()
	src := masterTable(t, gw, masterID) + fmt.Sprintf(`%s
[[latent_slaves]]
kind = "docker"
name = "docker2"
build_wait_timeout = "1s"
[latent_slaves.docker]
docker_host = %q
image = "buildslave-slave"
command = ["/bin/slave", "-basedir", "/build"]
hostname = "docker2-box"
hostconfig = { mem_limit = "256m", extra_hosts = ["master.test:%s"] }
volumes = ["%s:/shared:ro"]
[[builders]]
name = "host-net"
slaves = ["docker1"]
  [[builders.steps]]
  shell = %q
[[builders]]
name = "bridge"
slaves = ["docker2"]
  [[builders.steps]]
  shell = %q
  [[builders.steps]]
  shell = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; grep master.test /etc/hosts; cat /shared/marker"
`, stanza, dockertest.Host(), gw, shared, probe, probe)
	if err := os.WriteFile(filepath.Join(shared, "marker"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The stanza's docker_host is the default: $DOCKER_HOST.
	t.Setenv("DOCKER_HOST", dockertest.Host())
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "master.toml"), []byte(src), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := startMaster(t, cfg)

	// build forces a build of builder and returns it once it succeeded,
	// with the time its container was seen gone.
	build := func(builder string) (status.Build, time.Time) {
		t.Helper()
		code, body := post(t, m, "/force?builder="+builder, nil, "Accept", "application/json")
		var forced struct{ ID int }
		if err := json.Unmarshal([]byte(body), &forced); code != http.StatusAccepted || err != nil {
			t.Fatalf("force %s: %d %s", builder, code, body)
		}
		var b status.Build
		eventually(t, time.Minute, builder+" built", func() bool {
			for _, r := range m.history.Recent(10) {
				if r.ID == forced.ID && r.State != builds.Waiting && r.State != builds.Running {
					b = r
					return true
				}
			}
			return false
		})
		if b.State != builds.Success || len(b.Steps) == 0 {
			t.Fatalf("%s: %+v", builder, b)
		}
		eventually(t, 30*time.Second, builder+"'s container removed", func() bool { return len(containersOf(t, cli, masterID)) == 0 })
		return b, time.Now()
	}
	host, _ := os.Hostname()

	b1, gone1 := build("host-net")
	if want := host + "\nin-the-image\n"; printed(b1.Steps[0].Output) != want {
		t.Errorf("docker1's step printed %q, want %q: the host's name (its network), an empty build directory, the image's /", b1.Steps[0].Output, want)
	}
	t.Logf("docker1 (build_wait_timeout 0): container gone %v after its build", gone1.Sub(b1.Finished))

	b2, gone2 := build("bridge")
	if want := "docker2-box\nin-the-image\n"; printed(b2.Steps[0].Output) != want {
		t.Errorf("docker2's step printed %q, want %q: the container's host name, an empty build directory, the image's /", b2.Steps[0].Output, want)
	}
	if got, want := printed(b2.Steps[1].Output), fmt.Sprintf("%d\n%s\tmaster.test\nfrom the host\n", 256<<20, gw); got != want {
		t.Errorf("docker2's memory limit, extra host and volume: %q, want %q", got, want)
	}
	if d := gone2.Sub(b2.Finished); d < time.Second {
		t.Errorf("docker2's container gone %v after its build, before its build_wait_timeout of 1s", d)
	} else {
		t.Logf("docker2 (build_wait_timeout 1s): container gone %v after its build", d)
	}

	// A reload changes docker2: its next container has the new name.
	cfg2, err := config.Parse(filepath.Join(t.TempDir(), "master.toml"), []byte(strings.Replace(src, "docker2-box", "docker2-new", 1)), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.reconfigure(cfg2); err != nil {
		t.Fatal(err)
	}
	if b, _ := build("bridge"); !strings.HasPrefix(printed(b.Steps[0].Output), "docker2-new\n") {
		t.Errorf("after the reload docker2's step printed %q", b.Steps[0].Output)
	}
	if err := m.shutdown(10*time.Second, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ids := containersOf(t, cli, masterID); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
}

// TestDockerMasterKilledMidStart kills (SIGKILL) a master process while
// its Docker latent slave's container is starting (created, never to
// attach), then starts the master again with the same master_id: it
// removes the leftover by its label, and no container is left.
func TestDockerMasterKilledMidStart(t *testing.T) {
	cli := dockertest.Client(t)
	needReadmeImage(t)
	masterID := "docker-kill-" + strings.ToLower(rand.Text()[:10])
	base := masterTable(t, "127.0.0.1", masterID) + fmt.Sprintf(`reap_interval = "-1s"
[[latent_slaves]]
kind = "docker"
name = "stuck"
missing_timeout = "10m"
[latent_slaves.docker]
docker_host = %q
image = "buildslave-slave"
command = ["/bin/slave", "-basedir", "/build"]
hostconfig = { network_mode = "none" }
[[builders]]
name = "b"
slaves = ["stuck"]
  [[builders.steps]]
  shell = "true"
`, dockertest.Host())
	path := writeFile(t, base+"[[schedulers]]\nbuilder = \"b\"\nat_start = true\n")
	cmd, out, errs := startChild(t, "-config", path)
	defer func() {
		if t.Failed() {
			t.Logf("the master's output:\n%s\n%s", out.String(), errs.String())
		}
	}()
	eventually(t, time.Minute, "the at_start build's container created", func() bool { return len(containersOf(t, cli, masterID)) == 1 })
	if !strings.Contains(out.String(), "latent slave stuck: substantiating") || strings.Contains(out.String(), "attached") {
		t.Fatalf("not in the middle of a start:\n%s", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	leftover := containersOf(t, cli, masterID)
	if len(leftover) != 1 {
		t.Fatalf("after kill -9: containers %v, want the one leftover", leftover)
	}

	// The same master again, without the at_start build.
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, out, errs = startChild(t, "-config", path)
	eventually(t, time.Minute, "the master started again", func() bool { return strings.Contains(out.String(), "status page") })
	if ids := containersOf(t, cli, masterID); len(ids) != 0 {
		t.Errorf("after the restart: containers %v, want none (reaped by label)", ids)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errs.String())
	}
	if want := "latent slave stuck: reaped instance " + leftover[0]; !strings.Contains(out.String(), want) {
		t.Errorf("the restarted master's output lacks %q:\n%s", want, out.String())
	}
	if ids := containersOf(t, cli, masterID); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
}
