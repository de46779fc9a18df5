// Command bench runs the same load against a stock Buildbot 3.7 master
// (Debian package buildbot) and our example master, side by side, over
// each slave protocol (Perspective Broker and msgpack_experimental_v7): an
// attach storm of N slaves (time until all attached, master RSS before and
// after, master CPU time) and the build throughput of K slaves running
// `true`. See README.md for the figures and how they were made.
//
//	go run ./bench -n 100,1000,10000
//	go run ./bench -protocol pb -n 100,1000 -skip-builds
//
// Every master and load generator is a child process in a process group of
// its own, and every one is stopped before the bench exits, on an
// interrupt too. The stock master runs only for N up to -stock-max.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/buildslave/buildslave/bench/internal/benchcfg"
)

type options struct {
	protocols     []string
	ns            []int
	concs         []int
	stockMax      int
	k             int
	warmup, span  time.Duration
	skipStorm     bool
	skipBuilds    bool
	settle        time.Duration
	attachTimeout time.Duration
	keep          bool
	oneAddress    bool
	idle          time.Duration // after our storms, measure the idle master's CPU so long (0: not)
	keepalive     time.Duration // the slaves' keepalive_interval with -idle
}

func main() {
	var o options
	plist := flag.String("protocol", "pb,msgpack", "slave protocols, comma-separated: pb (Perspective Broker), msgpack (msgpack_experimental_v7)")
	nlist := flag.String("n", "100,1000,10000", "attach storm sizes, comma-separated")
	clist := flag.String("concurrency", "0,50", "attach storms: how many slaves dial and attach at once, comma-separated; 0 = all N at once")
	flag.IntVar(&o.stockMax, "stock-max", 1000, "run the stock master only for N up to this (10,000 takes it ~5 min); 0 = never")
	flag.IntVar(&o.k, "k", 10, "slaves in the build-throughput run")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "throughput: builds before the measured span are not counted")
	flag.DurationVar(&o.span, "span", 30*time.Second, "throughput: the measured span")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "wait after a master started before its first RSS reading")
	flag.DurationVar(&o.attachTimeout, "attach-timeout", 0, "give up on a storm after this (0: 60 s + 100 ms per slave)")
	flag.BoolVar(&o.skipStorm, "skip-storm", false, "skip the attach storms")
	flag.BoolVar(&o.skipBuilds, "skip-builds", false, "skip the build-throughput run")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, configs, the stock masters' twistd.log)")
	flag.BoolVar(&o.oneAddress, "one-address", false, "storms: every slave dials from 127.0.0.1 (default: each from a loopback address of its own, as a fleet of hosts)")
	flag.DurationVar(&o.idle, "idle", 0, "after each storm of ours, wait one -keepalive interval, then measure the master's CPU over this window with every slave idle but for keepalives (0: not)")
	flag.DurationVar(&o.keepalive, "keepalive", time.Minute, "with -idle: the slaves' keepalive_interval")
	flag.Parse()
	o.ns, o.concs = ints("n", *nlist, 1), ints("concurrency", *clist, 0)
	for _, p := range strings.Split(*plist, ",") {
		switch p = strings.TrimSpace(p); p {
		case benchcfg.PB, benchcfg.Msgpack:
			o.protocols = append(o.protocols, p)
		default:
			fmt.Fprintf(os.Stderr, "bench: bad -protocol %q: want pb or msgpack\n", p)
			os.Exit(2)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := bench(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// ints parses a comma-separated list of integers no smaller than min.
func ints(flag, list string, min int) []int {
	var ns []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(f), "_", ""))
		if err != nil || n < min {
			fmt.Fprintf(os.Stderr, "bench: bad -%s %q\n", flag, f)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	return ns
}

// logf reports progress on stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func bench(ctx context.Context, o options) (err error) {
	work, err := os.MkdirTemp("", "buildslave-bench-")
	if err != nil {
		return err
	}
	// Whatever happens, nothing is left running.
	defer func() {
		stopAllStock()
		killAll()
		if o.keep || err != nil {
			logf("work directory kept: %s", work)
		} else {
			os.RemoveAll(work)
		}
	}()
	go func() { // on a signal, stop the children at once; the waits in progress end with ctx's error
		<-ctx.Done()
		stopAllStock()
		killAll()
	}()

	bins, err := build(ctx, work)
	if err != nil {
		return err
	}
	machine()
	password := secret()

	if bins.oursMissing != "" {
		logf("our master is not run: %s", bins.oursMissing)
	}
	for _, proto := range o.protocols {
		if o.skipStorm {
			break
		}
		var rows []stormRow
		for _, n := range o.ns {
			for _, conc := range o.concs {
				timeout := o.attachTimeout
				if timeout == 0 {
					timeout = time.Minute + time.Duration(n)*100*time.Millisecond
				}
				r := stormRow{n: n, conc: conc}
				if n <= o.stockMax {
					r.stock, err = storm(ctx, work, "stock", proto, n, conc, timeout, o, bins, password)
					if err != nil {
						return err
					}
				}
				if bins.oursMissing == "" {
					r.ours, err = storm(ctx, work, "ours", proto, n, conc, timeout, o, bins, password)
					if err != nil {
						return err
					}
				}
				rows = append(rows, r)
			}
		}
		printStorm(os.Stdout, proto, rows)
		if o.idle > 0 {
			printIdle(os.Stdout, proto, o, rows)
		}
	}
	for _, proto := range o.protocols {
		if o.skipBuilds {
			break
		}
		stock, err := throughput(ctx, work, "stock", proto, o, bins, password)
		if err != nil {
			return err
		}
		var ours throughputResult
		if bins.oursMissing == "" {
			if ours, err = throughput(ctx, work, "ours", proto, o, bins, password); err != nil {
				return err
			}
		}
		printThroughput(os.Stdout, proto, o, stock, ours)
	}
	logf("load average at the end: %s", loadavg())
	return nil
}

// binaries are the programs the bench built.
type binaries struct {
	loadslave, ours string
	// oursMissing says why our master cannot run the bench: it predates
	// the PB listener ([master] listen for PB, listen_msgpack for msgpack).
	oursMissing string
}

func build(ctx context.Context, work string) (binaries, error) {
	gomod, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		return binaries{}, fmt.Errorf("go env GOMOD: run the bench from the module (go run ./bench): %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	b := binaries{loadslave: filepath.Join(work, "loadslave"), ours: filepath.Join(work, "master")}
	logf("building the load generator and our master in %s", work)
	for out, pkg := range map[string]string{b.loadslave: "./internal/loadslave", b.ours: "./examples/master"} {
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, pkg)
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %v\n%s", pkg, err, o)
		}
	}
	// The generated configuration names both listeners; a master from
	// before the PB listener refuses listen_msgpack as an unknown key.
	help, _ := exec.CommandContext(ctx, b.ours, "-h").CombinedOutput()
	if !strings.Contains(string(help), "listen-msgpack") {
		b.oursMissing = "examples/master has no PB listener yet (no -listen-msgpack flag, so no [master] listen_msgpack key)"
	}
	return b, nil
}

func goTool() string { return filepath.Join(runtime.GOROOT(), "bin", "go") }

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// secret is a fresh random password for every slave of this run.
func secret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// stormResult is one master's attach storm.
type stormResult struct {
	ran                 bool
	attached, n, errors int
	seconds             float64
	rssBefore, rssAfter int // kB
	cpuSeconds          float64
	timeout             time.Duration
	idleCPU             float64 // with -idle: CPU seconds over the idle window
	idleSeconds         float64 // the window, measured
}

type stormRow struct {
	n, conc     int
	stock, ours stormResult
}

// storm starts one master with n slaves, lets the load generator attach
// them all over proto, and stops everything.
func storm(ctx context.Context, work, which, proto string, n, conc int, timeout time.Duration, o options, bins binaries, password string) (r stormResult, err error) {
	dir := filepath.Join(work, fmt.Sprintf("storm-%s-%s-%d-%d", proto, which, n, conc))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, err
	}
	logf("storm %s %s N=%d: starting the master", proto, which, n)
	var m master
	if which == "stock" {
		m, err = startStock(ctx, dir, benchcfg.StockStorm, proto, n, password)
	} else {
		pw := filepath.Join(dir, "slave.password")
		if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
			return r, err
		}
		var keepalive time.Duration
		if o.idle > 0 {
			keepalive = o.keepalive
		}
		m, err = startOurs(ctx, bins.ours, dir, proto, func(a benchcfg.Addrs) benchcfg.Config { return benchcfg.Storm(a, n, pw, keepalive) })
	}
	if err != nil {
		return r, err
	}
	defer m.Stop()
	sleep(ctx, o.settle)
	if r.rssBefore, err = rssKB(m.PID()); err != nil {
		return r, err
	}
	cpu0, _ := cpuSeconds(m.PID())
	sources := n // a fleet: each slave from an address of its own
	if o.oneAddress {
		sources = 0
	}
	lg, err := startLoadgen(bins.loadslave, filepath.Join(dir, "loadslave.log"), password, "-protocol", proto,
		"-url", m.URL(), "-n", strconv.Itoa(n), "-prefix", benchcfg.Prefix, "-timeout", timeout.String(), "-concurrency", strconv.Itoa(conc),
		"-sources", strconv.Itoa(sources))
	if err != nil {
		return r, err
	}
	defer lg.close()
	logf("storm %s %s N=%d concurrency=%d: go (deadline %v)", proto, which, n, conc, timeout)
	if err := lg.send("go"); err != nil {
		return r, err
	}
	f, err := lg.expect(ctx, timeout+time.Minute, "attached")
	if err != nil {
		return r, err
	}
	if len(f) != 4 {
		return r, fmt.Errorf("load generator: bad line %q", f)
	}
	r.attached, _ = strconv.Atoi(f[0])
	r.n, _ = strconv.Atoi(f[1])
	r.seconds, _ = strconv.ParseFloat(f[2], 64)
	r.errors, _ = strconv.Atoi(f[3])
	if r.rssAfter, err = rssKB(m.PID()); err != nil {
		return r, err
	}
	cpu1, _ := cpuSeconds(m.PID())
	r.cpuSeconds = cpu1 - cpu0
	r.ran, r.timeout = true, timeout
	logf("storm %s %s N=%d concurrency=%d: %d/%d attached in %.2f s; RSS %d → %d kB; CPU %.1f s", proto, which, n, conc, r.attached, r.n, r.seconds,
		r.rssBefore, r.rssAfter, r.cpuSeconds)
	if r.errors > 0 {
		logf("storm %s %s N=%d concurrency=%d: %d failed dials or connections (see %s)", proto, which, n, conc, r.errors, filepath.Join(dir, "loadslave.log"))
	}
	if o.idle > 0 && which == "ours" {
		logf("storm %s ours N=%d concurrency=%d: idle, keepalive_interval %v: waiting one interval, then measuring for %v", proto, n, conc, o.keepalive, o.idle)
		sleep(ctx, o.keepalive) // the first keepalives, one interval after each attach, are under way
		cpuA, _ := cpuSeconds(m.PID())
		t0 := time.Now()
		sleep(ctx, o.idle)
		cpuB, _ := cpuSeconds(m.PID())
		r.idleCPU, r.idleSeconds = cpuB-cpuA, time.Since(t0).Seconds()
		logf("storm %s ours N=%d concurrency=%d: idle: %.2f s CPU in %.0f s, %.2f %% of a core", proto, n, conc, r.idleCPU, r.idleSeconds, 100*r.idleCPU/r.idleSeconds)
	}
	lg.close()
	return r, nil
}

// throughputResult is one master's build throughput.
type throughputResult struct {
	ran        bool
	builds     int
	seconds    float64
	cpuSeconds float64
	rss        int
	failures   int64
}

// throughput runs k slaves doing `true` builds as fast as the master
// hands them out, and counts the builds in a span after a warm-up. The
// stock master's builds trigger their own successors (see
// benchcfg.StockThroughput); ours are forced with POST /force, keeping 4
// builds per slave forced and not yet run.
func throughput(ctx context.Context, work, which, proto string, o options, bins binaries, password string) (r throughputResult, err error) {
	dir := filepath.Join(work, "builds-"+proto+"-"+which)
	slaves := filepath.Join(dir, "slaves")
	if err := os.MkdirAll(slaves, 0o700); err != nil {
		return r, err
	}
	logf("builds %s %s K=%d: starting the master", proto, which, o.k)
	var m master
	var ours *ourMaster
	if which == "stock" {
		m, err = startStock(ctx, dir, benchcfg.StockThroughput, proto, o.k, password)
	} else {
		pw := filepath.Join(dir, "slave.password")
		if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
			return r, err
		}
		ours, err = startOurs(ctx, bins.ours, dir, proto, func(a benchcfg.Addrs) benchcfg.Config { return benchcfg.Throughput(a, o.k, pw) })
		m = ours
	}
	if err != nil {
		return r, err
	}
	defer m.Stop()
	lg, err := startLoadgen(bins.loadslave, filepath.Join(dir, "loadslave.log"), password, "-protocol", proto,
		"-url", m.URL(), "-n", strconv.Itoa(o.k), "-prefix", benchcfg.Prefix, "-exec", "-basedir", slaves, "-timeout", "2m")
	if err != nil {
		return r, err
	}
	defer lg.close()
	if err := lg.send("go"); err != nil {
		return r, err
	}
	f, err := lg.expect(ctx, 3*time.Minute, "attached")
	if err != nil {
		return r, err
	}
	if f[0] != f[1] {
		return r, fmt.Errorf("builds %s %s: only %s of %s slaves attached", proto, which, f[0], f[1])
	}

	var wg sync.WaitGroup
	postCtx, stopPosting := context.WithCancel(ctx)
	defer func() { stopPosting(); wg.Wait() }()
	var failures atomic.Int64
	posted, next := 0, 0
	force := func() { // one build of the next builder, round robin
		url := fmt.Sprintf("http://%s/force?builder=b%d", ours.http, next%o.k)
		next++
		posted++
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(postCtx, "POST", url, nil)
			req.Header.Set("Accept", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				if postCtx.Err() == nil {
					failures.Add(1)
				}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 300 {
				failures.Add(1)
			}
		})
	}
	start := time.Now()
	var c0, c1 int
	var cpu0, cpu1 float64
	var t0, t1 time.Time
	for tick := time.NewTicker(20 * time.Millisecond); ; <-tick.C {
		c, err := lg.count(ctx)
		if err != nil {
			return r, err
		}
		now := time.Since(start)
		if t0.IsZero() && now >= o.warmup {
			c0, t0 = c, time.Now()
			cpu0, _ = cpuSeconds(m.PID())
		}
		if now >= o.warmup+o.span {
			c1, t1 = c, time.Now()
			cpu1, _ = cpuSeconds(m.PID())
			tick.Stop()
			break
		}
		for ours != nil && posted-c < 4*o.k {
			force()
		}
	}
	r.builds, r.seconds, r.cpuSeconds, r.failures = c1-c0, t1.Sub(t0).Seconds(), cpu1-cpu0, failures.Load()
	r.rss, _ = rssKB(m.PID())
	r.ran = true
	logf("builds %s %s K=%d: %d builds in %.1f s = %.1f/s; CPU %.1f s; %d failures", proto, which, o.k, r.builds, r.seconds,
		float64(r.builds)/r.seconds, r.cpuSeconds, r.failures)
	return r, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
