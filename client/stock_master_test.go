package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/internal/integration"
)

// masterCfg is a stock Buildbot 3.7 configuration with one slave and one
// builder that runs a shell command, uploads a file and a directory and
// downloads a file; its Periodic scheduler builds at once on a new database.
// (A stock 3.7 master answers every update_read_file with None, so the
// downloaded file is empty, with the stock slave too: the check step only
// looks for the file.)
//
// The protocols block is %s: protocolsCfg's for the protocol under test.
const masterCfg = `
from buildbot.plugins import schedulers, steps, util, worker
%s
c = BuildmasterConfig = {}
c['workers'] = [worker.Worker('gobot', 'go-secret')]
c['protocols'] = protocols
c['schedulers'] = [schedulers.Periodic(name='now', builderNames=['hello'], periodicBuildTimer=3600)]
f = util.BuildFactory()
f.addStep(steps.ShellCommand(name='greet', command=['sh', '-c', 'echo hello from the Go slave; mkdir -p dist; echo artifact > dist/out.txt']))
f.addStep(steps.FileUpload(workersrc='dist/out.txt', masterdest='uploaded.txt'))
f.addStep(steps.DirectoryUpload(workersrc='dist', masterdest='uploaded-dir'))
f.addStep(steps.FileDownload(mastersrc='master.cfg', workerdest='downloaded.cfg'))
f.addStep(steps.ShellCommand(name='check', command='test -f downloaded.cfg'))
c['builders'] = [util.BuilderConfig(name='hello', workernames=['gobot'], factory=f)]
c['title'] = 'buildslave'
c['buildbotURL'] = 'http://127.0.0.1/'
c['db'] = {'db_url': 'sqlite:///state.sqlite'}
c['buildbotNetUsageData'] = None
`

// protocolsCfg configures each protocol on port %d of the loopback
// interface. PB is the stock master's default: nothing but its port.
// Buildbot 3.7 accepts only a bare port number for msgpack and listens on
// all interfaces; the configuration narrows its dispatcher's port string
// to the loopback interface.
var protocolsCfg = map[string]string{
	client.PB: `protocols = {'pb': {'port': 'tcp:%d:interface=127.0.0.1'}}`,
	client.Msgpack: `from buildbot.worker.protocols.manager import msgpack as msgpack_manager

_dispatcher_init = msgpack_manager.Dispatcher.__init__
def _loopback_dispatcher(self, config_portstr, portstr):
    _dispatcher_init(self, config_portstr, portstr)
    self.portstr = portstr + ':interface=127.0.0.1'
msgpack_manager.Dispatcher.__init__ = _loopback_dispatcher
protocols = {'msgpack_experimental_v7': {'port': %d}}`,
}

// TestStockBuildbotMaster runs a build on a stock Buildbot 3.7 master
// (Debian package buildbot) with the Go slave, over each protocol, and
// checks it succeeds.
func TestStockBuildbotMaster(t *testing.T) {
	for _, proto := range []string{client.PB, client.Msgpack} {
		t.Run(proto, func(t *testing.T) { testStockBuildbotMaster(t, proto) })
	}
}

func testStockBuildbotMaster(t *testing.T, proto string) {
	bin := integration.Require(t, "buildbot")
	home := t.TempDir()
	dir := filepath.Join(home, "master")
	port := freePort(t)
	buildbot := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8"}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("buildbot %v: %v\n%s", args, err, out)
		}
	}
	buildbot("create-master", "--quiet", dir)
	if err := os.WriteFile(filepath.Join(dir, "master.cfg"), fmt.Appendf(nil, masterCfg, fmt.Sprintf(protocolsCfg[proto], port)), 0o644); err != nil {
		t.Fatal(err)
	}
	buildbot("start", dir)
	t.Cleanup(func() {
		buildbot("stop", dir)
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "twistd.log"))
			t.Logf("master's twistd.log:\n%s", log)
		}
	})

	s, err := client.New(client.Config{Master: fmt.Sprintf("127.0.0.1:%d", port), Protocol: proto, Name: "gobot",
		Password: "go-secret", Basedir: filepath.Join(home, "slave"), Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	results, err := waitForBuild(filepath.Join(dir, "state.sqlite"), 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if results != 0 {
		t.Fatalf("build results = %d, want 0 (success)", results)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "uploaded.txt")); err != nil || string(b) != "artifact\n" {
		t.Errorf("uploaded file: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "uploaded-dir", "out.txt")); err != nil || string(b) != "artifact\n" {
		t.Errorf("uploaded directory: %q, %v", b, err)
	}
}

// waitForBuild polls the master's database until a build finished and
// returns its results column (0 = success).
func waitForBuild(db string, timeout time.Duration) (int, error) {
	const query = `import sqlite3, sys
try:
    con = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
    rows = con.execute('select results from builds where complete_at is not null').fetchall()
    print(rows[0][0] if rows else '')
except sqlite3.Error:
    print('')`
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		out, err := exec.Command("/usr/bin/python3", "-c", query, db).Output()
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", db, err)
		}
		if s := strings.TrimSpace(string(out)); s != "" {
			return strconv.Atoi(s)
		}
	}
	return 0, fmt.Errorf("no build finished within %v", timeout)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testWriter sends the slave's log to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
