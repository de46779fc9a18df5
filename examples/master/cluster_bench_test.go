package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/internal/testlog"
)

var pbAddrRE = regexp.MustCompile(`over Perspective Broker \([^)]*\) to ([0-9.:]+),`)

// BenchmarkClusterOf3Masters10000Slaves: three example masters as
// processes, sharing an etcd (embedded here, to read its metrics), each
// knowing the same 10,002 slaves; a load generator process per master
// attaches 3,334 slaves to it over PB, 100 at a time (each from one of 64
// loopback addresses). Reports the time until all 10,002 are attached (the
// slowest master), etcd writes per attach (etcd's revision), and etcd
// requests per master per second over 10 s of idleness afterwards.
func BenchmarkClusterOf3Masters10000Slaves(b *testing.B) {
	srv := clustertest.Start(b)
	const per = 3334
	ids := []string{"a", "b", "c"}
	slaves := slavesConfig(ids, per)
	loadslave := buildLoadslave(b)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		pbAddrs, _ := startBenchMasters(b, srv, ids, fmt.Sprintf("prefix = \"/bench%d/\"\n", i), slaves)
		var gens []*loadGen
		for mi, id := range ids {
			gens = append(gens, startLoadGen(b, loadslave, id, "-protocol", "pb", "-url", pbAddrs[mi], "-n", strconv.Itoa(per), "-prefix", id, "-sources", "64", "-concurrency", "100", "-timeout", "2m"))
		}
		rev0 := srv.Revision()
		b.StartTimer()
		slowest := attachAll(b, gens)
		b.StopTimer()
		b.ReportMetric(slowest, "s/10002-attaches")
		b.ReportMetric(float64(srv.Revision()-rev0)/(3*per), "writes/attach")
		time.Sleep(2 * time.Second) // the attaches' last etcd traffic ends
		before := srv.Received(b)
		time.Sleep(10 * time.Second)
		b.ReportMetric(float64(srv.Received(b)-before)/3/10, "idle-requests/master/s")
		b.StartTimer()
	}
}

// BenchmarkClusterFailover3000Slaves: three example masters as processes,
// sharing an etcd with a 5 s lease TTL, each knowing the same 3,000
// slaves; two load generator processes attach 1,500 slaves each to master
// a over PB with -failover, one listing the masters a,b,c and the other
// a,c,b. Then a is killed (SIGKILL): each slave dials the next master,
// whose claim of its name waits for a's lease to end. Reports the time
// from the kill until both generators report all their slaves attached
// again, the lease TTL (issue 11's goal: within TTL + 5 s), and how many
// dials or logins failed meanwhile (a master's cap on connections not yet
// attached closes logins that wait for the lease).
func BenchmarkClusterFailover3000Slaves(b *testing.B) {
	srv := clustertest.Start(b)
	const per, ttl = 1500, 5 * time.Second
	ids, prefixes := []string{"a", "b", "c"}, []string{"x", "y"}
	slaves := slavesConfig(prefixes, per)
	loadslave := buildLoadslave(b)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		pbAddrs, masters := startBenchMasters(b, srv, ids, fmt.Sprintf("prefix = \"/failover%d/\"\nlease_ttl = %q\n", i, ttl), slaves)
		orders := [][]int{{0, 1, 2}, {0, 2, 1}}
		var gens []*loadGen
		for gi, p := range prefixes {
			var urls []string
			for _, mi := range orders[gi] {
				urls = append(urls, pbAddrs[mi])
			}
			gens = append(gens, startLoadGen(b, loadslave, p, "-protocol", "pb", "-url", strings.Join(urls, ","), "-failover", "-n", strconv.Itoa(per), "-prefix", p, "-sources", "64", "-concurrency", "100", "-timeout", "2m"))
		}
		attachAll(b, gens)
		b.StartTimer()
		killed := time.Now()
		masters[0].Process.Signal(syscall.SIGKILL)
		failures := 0
		for _, g := range gens {
			_, fails := g.all(b, "reattached")
			failures += fails
		}
		took := time.Since(killed)
		b.StopTimer()
		b.ReportMetric(took.Seconds(), "s/failover-3000")
		b.ReportMetric(ttl.Seconds(), "s-lease-TTL")
		b.ReportMetric(float64(failures), "failed-attempts")
		b.StartTimer()
	}
}

// slavesConfig is the [[slaves]] of PREFIXi for each prefix and i below
// per, password pw.
func slavesConfig(prefixes []string, per int) string {
	var slaves strings.Builder
	for _, p := range prefixes {
		for i := range per {
			fmt.Fprintf(&slaves, "[[slaves]]\nname = \"%s%d\"\npassword = \"pw\"\n", p, i)
		}
	}
	return slaves.String()
}

// buildLoadslave builds internal/loadslave into a temporary directory.
func buildLoadslave(b *testing.B) string {
	loadslave := filepath.Join(b.TempDir(), "loadslave")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", loadslave, "../../internal/loadslave").CombinedOutput(); err != nil {
		b.Fatalf("building loadslave: %v\n%s", err, out)
	}
	return loadslave
}

// startBenchMasters starts an example master process per id, on free
// loopback ports, in srv's cluster with the [cluster] settings cluster
// (at least a prefix) and the slaves slaves; it returns their PB
// addresses and processes, killed at the benchmark's end.
func startBenchMasters(b *testing.B, srv *clustertest.Server, ids []string, cluster, slaves string) ([]string, []*exec.Cmd) {
	var pbAddrs []string
	var cmds []*exec.Cmd
	for _, id := range ids {
		cfg := fmt.Sprintf("[master]\nlisten = \"127.0.0.1:0\"\nlisten_msgpack = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nbasedir = %q\n"+
			"[cluster]\netcd = %q\nmaster_id = %q\n%s", b.TempDir(), srv.Endpoints[0], id, cluster)
		path := filepath.Join(b.TempDir(), "master.toml")
		if err := os.WriteFile(path, []byte(cfg+slaves), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-config", path)
		cmd.Env = append(os.Environ(), envRunMaster+"=1")
		out := &testlog.Buffer{}
		cmd.Stdout, cmd.Stderr = out, io.Discard
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })
		for deadline := time.Now().Add(30 * time.Second); !pbAddrRE.MatchString(out.String()); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("master %s did not start:\n%s", id, out)
			}
		}
		pbAddrs = append(pbAddrs, pbAddrRE.FindStringSubmatch(out.String())[1])
		cmds = append(cmds, cmd)
	}
	return pbAddrs, cmds
}

// loadGen is a loadslave process, talked to on its stdin and stdout.
type loadGen struct {
	name string
	in   io.WriteCloser
	out  *bufio.Scanner
}

// startLoadGen starts loadslave with args (password pw) and waits for its
// ready; stdin closes at the benchmark's end.
func startLoadGen(b *testing.B, loadslave, name string, args ...string) *loadGen {
	cmd := exec.Command(loadslave, args...)
	cmd.Env = append(os.Environ(), "LOADSLAVE_PASSWORD=pw")
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Close(); cmd.Wait() })
	g := &loadGen{name: name, in: in, out: bufio.NewScanner(outp)}
	if line := g.line(b); line != "ready" {
		b.Fatalf("loadslave %s: %q", name, line)
	}
	return g
}

// line is the generator's next line; the benchmark fails if it ended.
func (g *loadGen) line(b *testing.B) string {
	if !g.out.Scan() {
		b.Fatalf("loadslave %s ended", g.name)
	}
	return g.out.Text()
}

// attachAll says go to every generator and waits until each said all its
// slaves attached; it returns the slowest one's seconds.
func attachAll(b *testing.B, gens []*loadGen) float64 {
	for _, g := range gens {
		fmt.Fprintln(g.in, "go")
	}
	slowest := 0.0
	for _, g := range gens {
		secs, _ := g.all(b, "attached")
		slowest = max(slowest, secs)
	}
	return slowest
}

// all reads the generator's next line, "WORD K N SECONDS FAILURES" (its
// attached or reattached line), and returns its seconds and failures; the
// benchmark fails unless it is that line with all N slaves (K = N).
func (g *loadGen) all(b *testing.B, word string) (secs float64, failures int) {
	line := g.line(b)
	var k, n int
	if c, err := fmt.Sscanf(line, word+" %d %d %g %d", &k, &n, &secs, &failures); err != nil || c != 4 || k != n {
		b.Fatalf("loadslave %s: %q, want %s with all slaves", g.name, line, word)
	}
	return secs, failures
}
