package client_test

// These tests attach our Go slave to a master built on this library (the
// protocol package and a slave.Manager) over real sockets on loopback, so
// `go test ./...` covers both ends of the protocol on any machine.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// ourMaster is a master built on the library, listening on 127.0.0.1.
type ourMaster struct {
	m        *slave.Manager
	addr     string
	protocol string // client.Msgpack or client.PB
	log      *testlog.Buffer
	ca       *x509.CertPool // set when serving wss://
	// stop closes the servers and the manager, as the test's end does.
	stop func()
}

// protocols are the transports our master serves, for tests of each.
var protocols = []string{client.Msgpack, client.PB}

func startOurMaster(t testing.TB, useTLS bool, proto string, slaves ...*slave.Slave) *ourMaster {
	t.Helper()
	om := &ourMaster{log: &testlog.Buffer{}, protocol: proto}
	logger := slog.New(slog.NewTextHandler(om.log, nil))
	m, err := slave.NewManager(slave.Config{Logger: logger}, slaves...)
	if err != nil {
		t.Fatal(err)
	}
	om.m = m
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	om.addr = l.Addr().String()
	if proto == client.PB {
		server := &pb.Server{Manager: m, Logger: logger, Builders: []string{"hello"}}
		served := make(chan struct{})
		go func() { server.Serve(l); close(served) }()
		om.stop = sync.OnceFunc(func() {
			server.Close()
			<-served
			m.Close()
		})
		t.Cleanup(om.stop)
		return om
	}
	server := &protocol.Server{Handler: &protocol.Handler{Manager: m, Logger: logger, Builders: []string{"hello"}}}
	if useTLS {
		ts := httptest.NewUnstartedServer(nil) // only for its certificate for 127.0.0.1
		ts.StartTLS()
		server.TLSConfig = &tls.Config{Certificates: ts.TLS.Certificates}
		om.ca = x509.NewCertPool()
		om.ca.AddCert(ts.Certificate())
		ts.Close()
	}
	served := make(chan struct{})
	go func() { server.Serve(l); close(served) }()
	om.stop = sync.OnceFunc(func() {
		server.Shutdown(context.Background())
		<-served
		m.Close()
	})
	t.Cleanup(om.stop)
	return om
}

// master is how a slave names this master in Config.Master: "host:port"
// for PB, a ws:// URL for msgpack.
func (om *ourMaster) master() string {
	if om.protocol == client.PB {
		return om.addr
	}
	return "ws://" + om.addr + "/"
}

// runSlave runs our Go slave until the test ends; Run's result arrives on
// the returned channel.
func (om *ourMaster) runSlave(t testing.TB, cfg client.Config) <-chan error {
	t.Helper()
	cfg.Master, cfg.Protocol = om.addr, om.protocol
	return runGoSlave(t, cfg)
}

// runGoSlave runs our Go slave on cfg, with short back-off, until the
// test ends; Run's result arrives on the returned channel.
func runGoSlave(t testing.TB, cfg client.Config) <-chan error {
	t.Helper()
	if cfg.Basedir == "" {
		cfg.Basedir = t.TempDir()
	}
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	go func() { done <- s.Run(ctx); close(finished) }()
	t.Cleanup(func() { cancel(); <-finished })
	return done
}

func acquire(t *testing.T, m *slave.Manager, name string) *slave.Build {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Release)
	return b
}

func run(t *testing.T, b *slave.Build, req remote.Request) (stdout string, rc int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Second)
	defer cancel()
	cmd, err := remote.Start(ctx, b.Conn(), req)
	if err != nil {
		t.Fatal(err)
	}
	rc = -1
	for u := range cmd.Updates() {
		switch u.Key {
		case "stdout":
			stdout += u.Text
		case "rc":
			rc = u.RC
		}
	}
	if err := cmd.Wait(ctx); err != nil {
		t.Fatalf("%s: %v", req.Name, err)
	}
	return stdout, rc
}

func TestGoSlaveAttachesAndBuildsOnOurMaster(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			bot, _ := slave.New("bot-go", "sekrit", slave.KeepaliveInterval(100*time.Millisecond))
			om := startOurMaster(t, false, proto, bot)
			basedir := t.TempDir()
			os.MkdirAll(filepath.Join(basedir, "info"), 0o755)
			os.WriteFile(filepath.Join(basedir, "info", "admin"), []byte("Ann <ann@example.com>\n"), 0o644)
			om.runSlave(t, client.Config{Name: "bot-go", Password: "sekrit", Basedir: basedir})

			b := acquire(t, om.m, "bot-go")
			st, _ := om.m.State("bot-go")
			if !strings.Contains(st.Info.Admin, "ann@example.com") || st.Info.Basedir != basedir || st.Info.Commands["shell"] == "" {
				t.Errorf("slave info = %+v", st.Info)
			}
			if fi, err := os.Stat(filepath.Join(basedir, "hello")); err != nil || !fi.IsDir() {
				t.Errorf("builder directory not made on attach: %v", err)
			}

			work := t.TempDir()
			out, rc := run(t, b, remote.Request{Name: "shell", Builder: "hello", Args: map[string]any{
				"workdir": work, "command": []any{"sh", "-c", "echo hello; echo to-stderr >&2; printf 'x%.0s' $(seq 1 5000); exit 3"}}})
			if rc != 3 || !strings.HasPrefix(out, "hello\n") || strings.Count(out, "x") != 5000 {
				t.Errorf("shell: rc %d, stdout %d bytes %q...", rc, len(out), out[:min(len(out), 20)])
			}

			os.WriteFile(filepath.Join(work, "artifact.txt"), []byte("built bytes"), 0o644)
			var up bytes.Buffer
			run(t, b, remote.Request{Name: "upload_file", Upload: &up, Args: map[string]any{
				"path": filepath.Join(work, "artifact.txt"), "maxsize": 1 << 20, "blocksize": 4, "keepstamp": false}})
			if up.String() != "built bytes" {
				t.Errorf("uploaded %q", up.String())
			}

			run(t, b, remote.Request{Name: "download_file", Download: strings.NewReader("from the master"), Args: map[string]any{
				"path": filepath.Join(work, "downloaded.txt"), "maxsize": 1 << 20, "blocksize": 5, "mode": 0o600}})
			if got, _ := os.ReadFile(filepath.Join(work, "downloaded.txt")); string(got) != "from the master" {
				t.Errorf("downloaded %q", got)
			}

			// Keepalives at the slave's interval are answered: last seen moves on.
			first, _ := om.m.State("bot-go")
			deadline := time.Now().Add(10 * time.Second)
			for st, _ := om.m.State("bot-go"); !st.LastSeen.After(first.LastSeen); st, _ = om.m.State("bot-go") {
				if time.Now().After(deadline) {
					t.Fatal("no keepalive answered within 10 s at a 100 ms interval")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// echo runs "echo word" on the build's slave and checks its output.
func echo(t *testing.T, b *slave.Build, word string) {
	t.Helper()
	if out, rc := run(t, b, remote.Request{Name: "shell", Args: map[string]any{"workdir": t.TempDir(), "command": "echo " + word}}); rc != 0 || out != word+"\n" {
		t.Errorf("echo %s: rc %d stdout %q", word, rc, out)
	}
}

// A slave given two masters attaches to the first; when the first goes
// away, it attaches to the second and builds there, whatever the
// transport of each.
func TestGoSlaveMovesToTheNextMaster(t *testing.T) {
	for _, first := range protocols {
		for _, second := range protocols {
			t.Run(first+"-then-"+second, func(t *testing.T) {
				bot1, _ := slave.New("bot-go", "sekrit")
				bot2, _ := slave.New("bot-go", "sekrit")
				one, two := startOurMaster(t, false, first, bot1), startOurMaster(t, false, second, bot2)
				runGoSlave(t, client.Config{Master: one.master() + "," + two.master(), Name: "bot-go", Password: "sekrit"})
				echo(t, acquire(t, one.m, "bot-go"), "on-the-first")
				if st, _ := two.m.State("bot-go"); st.Attached {
					t.Error("attached to the second master while the first one served")
				}
				one.stop()
				echo(t, acquire(t, two.m, "bot-go"), "on-the-second")
			})
		}
	}
}

// A slave whose first master is unreachable at start attaches to the
// second.
func TestGoSlaveSkipsAnUnreachableMaster(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there any more: every dial is refused
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			bot, _ := slave.New("bot-go", "sekrit")
			om := startOurMaster(t, false, proto, bot)
			runGoSlave(t, client.Config{Master: dead + ",ws://" + dead + "/," + om.master(), Name: "bot-go", Password: "sekrit"})
			echo(t, acquire(t, om.m, "bot-go"), "past-the-dead-ones")
		})
	}
}

func TestWrongPasswordIsRefusedWith401AndOneLogLine(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			bot, _ := slave.New("bot-go", "sekrit")
			om := startOurMaster(t, false, proto, bot)
			done := om.runSlave(t, client.Config{Name: "bot-go", Password: "not-it", MaxRefusals: 1})
			select {
			case err := <-done:
				if !errors.Is(err, client.ErrRefused) {
					t.Fatalf("Run = %v, want ErrRefused", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("slave with a wrong password was not refused")
			}
			lines := 0
			for _, line := range strings.Split(om.log.String(), "\n") {
				if strings.Contains(line, "refused") && strings.Contains(line, "slave=bot-go") && strings.Contains(line, "wrong password") {
					lines++
				}
				if strings.Contains(line, "not-it") || strings.Contains(line, "sekrit") {
					t.Errorf("log shows a password: %s", line)
				}
			}
			if lines != 1 {
				t.Errorf("%d refusal lines, want 1:\n%s", lines, om.log)
			}
		})
	}
}

func TestGracefulShutdownEndsTheSlave(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			bot, _ := slave.New("bot-go", "sekrit")
			om := startOurMaster(t, false, proto, bot)
			done := om.runSlave(t, client.Config{Name: "bot-go", Password: "sekrit"})
			b := acquire(t, om.m, "bot-go")
			if err := om.m.GracefulShutdown("bot-go"); err != nil {
				t.Fatal(err)
			}
			b.Release()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after shutdown = %v, want nil", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("slave did not shut down")
			}
		})
	}
}

func TestGoSlaveVerifiesOurMastersCertificate(t *testing.T) {
	bot, _ := slave.New("bot-tls", "sekrit")
	om := startOurMaster(t, true, client.Msgpack, bot)
	om.runSlave(t, client.Config{Name: "bot-tls", Password: "sekrit", TLS: true, RootCAs: om.ca})
	b := acquire(t, om.m, "bot-tls")
	if out, rc := run(t, b, remote.Request{Name: "shell", Args: map[string]any{"workdir": t.TempDir(), "command": "echo over-tls"}}); rc != 0 || out != "over-tls\n" {
		t.Errorf("rc %d stdout %q", rc, out)
	}

	// A slave that does not trust the certificate never attaches.
	untrusting, _ := slave.New("bot-untrusting", "sekrit")
	om.m.Reconfigure(bot, untrusting)
	done := om.runSlave(t, client.Config{Name: "bot-untrusting", Password: "sekrit", TLS: true, MaxRefusals: 1})
	time.Sleep(200 * time.Millisecond) // several dial attempts at 10-50 ms back-off
	if st, _ := om.m.State("bot-untrusting"); st.Attached {
		t.Error("slave attached without trusting the master's certificate")
	}
	select {
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	default:
	}
}

// BenchmarkCommandsAcross100Slaves runs `true` through the shell command
// on 100 Go slaves attached to our master, 100 commands at a time.
func BenchmarkCommandsAcross100Slaves(b *testing.B) {
	const n = 100
	slaves := make([]*slave.Slave, n)
	names := make([]string, n)
	for i := range n {
		names[i] = "bot-" + strconv.Itoa(i)
		slaves[i], _ = slave.New(names[i], "pw", slave.MaxBuilds(1))
	}
	om := startOurMaster(b, false, client.Msgpack, slaves...)
	for _, name := range names {
		om.runSlave(b, client.Config{Name: name, Password: "pw"})
	}
	work := b.TempDir()
	var latencies []time.Duration
	var mu sync.Mutex
	b.SetParallelism(n / 2) // 2 cores × 50 = 100 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			build, err := om.m.Acquire(ctx, names...)
			if err != nil {
				b.Error(err)
				cancel()
				return
			}
			start := time.Now()
			cmd, err := remote.Start(ctx, build.Conn(), remote.Request{Name: "shell", Args: map[string]any{"workdir": work, "command": []any{"true"}}})
			if err == nil {
				for range cmd.Updates() {
				}
				err = cmd.Wait(ctx)
			}
			elapsed := time.Since(start)
			build.Release()
			cancel()
			if err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			latencies = append(latencies, elapsed)
			mu.Unlock()
		}
	})
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
}
