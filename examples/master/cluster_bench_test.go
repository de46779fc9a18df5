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
	var slaves strings.Builder
	for _, p := range ids {
		for i := range per {
			fmt.Fprintf(&slaves, "[[slaves]]\nname = \"%s%d\"\npassword = \"pw\"\n", p, i)
		}
	}
	loadslave := filepath.Join(b.TempDir(), "loadslave")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", loadslave, "../../internal/loadslave").CombinedOutput(); err != nil {
		b.Fatalf("building loadslave: %v\n%s", err, out)
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		var pbAddrs []string
		for _, id := range ids {
			cfg := fmt.Sprintf("[master]\nlisten = \"127.0.0.1:0\"\nlisten_msgpack = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nbasedir = %q\n"+
				"[cluster]\netcd = %q\nmaster_id = %q\nprefix = \"/bench%d/\"\n", b.TempDir(), srv.Endpoints[0], id, i)
			path := filepath.Join(b.TempDir(), "master.toml")
			if err := os.WriteFile(path, []byte(cfg+slaves.String()), 0o600); err != nil {
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
		}
		type gen struct {
			in  io.WriteCloser
			out *bufio.Scanner
		}
		var gens []gen
		for mi, id := range ids {
			cmd := exec.Command(loadslave, "-protocol", "pb", "-url", pbAddrs[mi], "-n", strconv.Itoa(per), "-prefix", id, "-sources", "64", "-concurrency", "100", "-timeout", "2m")
			cmd.Env = append(os.Environ(), "LOADSLAVE_PASSWORD=pw")
			in, _ := cmd.StdinPipe()
			outp, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { in.Close(); cmd.Wait() })
			g := gen{in: in, out: bufio.NewScanner(outp)}
			if !g.out.Scan() || g.out.Text() != "ready" {
				b.Fatalf("loadslave %s: %q", id, g.out.Text())
			}
			gens = append(gens, g)
		}
		rev0 := srv.Revision()
		b.StartTimer()
		for _, g := range gens {
			fmt.Fprintln(g.in, "go")
		}
		slowest := 0.0
		for mi, g := range gens {
			if !g.out.Scan() {
				b.Fatalf("loadslave %s ended", ids[mi])
			}
			var k, n, fails int
			var secs float64
			if _, err := fmt.Sscanf(g.out.Text(), "attached %d %d %g %d", &k, &n, &secs, &fails); err != nil || k != n {
				b.Fatalf("loadslave %s: %q", ids[mi], g.out.Text())
			}
			slowest = max(slowest, secs)
		}
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
