package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/buildslave/buildslave/bench/internal/benchcfg"
)

// machine reports what the figures were measured on, on stderr.
func machine() {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.TrimPrefix(firstLine(string(b)), "MemTotal:"))
	}
	bb, _ := exec.Command("buildbot", "--version").CombinedOutput()
	logf("machine: %d CPUs (%s), %s memory, %s, %s; load average: %s",
		runtime.NumCPU(), model, mem, runtime.Version(), strings.Join(strings.Fields(string(bb)), " "), loadavg())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// protocolName is how the tables name a protocol.
func protocolName(proto string) string {
	if proto == benchcfg.PB {
		return "Perspective Broker (pb)"
	}
	return "msgpack_experimental_v7"
}

func printStorm(w io.Writer, proto string, rows []stormRow) {
	fmt.Fprintf(w, "\nAttach storm over %s (ours = examples/master)\n\n", protocolName(proto))
	fmt.Fprintln(w, "| N | at once | master | attached | time to all attached | RSS before | RSS after | CPU during storm |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		conc := "all"
		if r.conc > 0 && r.conc < r.n {
			conc = fmt.Sprint(r.conc)
		}
		for _, m := range []struct {
			name string
			r    stormResult
		}{{"stock Buildbot 3.7", r.stock}, {"ours", r.ours}} {
			if !m.r.ran {
				fmt.Fprintf(w, "| %d | %s | %s | not run | | | | |\n", r.n, conc, m.name)
				continue
			}
			att := fmt.Sprintf("%d/%d", m.r.attached, m.r.n)
			if m.r.errors > 0 {
				att += fmt.Sprintf(" (%d failed dials/conns)", m.r.errors)
			}
			t := fmt.Sprintf("%.2f s", m.r.seconds)
			if m.r.attached < m.r.n {
				t = fmt.Sprintf("not all within %v (last attach at %.2f s)", m.r.timeout, m.r.seconds)
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %.2f s |\n", r.n, conc, m.name, att, t,
				mib(m.r.rssBefore), mib(m.r.rssAfter), m.r.cpuSeconds)
		}
		if r.stock.ran && r.ours.ran {
			t := ratio(r.ours.seconds, r.stock.seconds)
			if r.stock.attached < r.stock.n {
				t = "-"
			}
			fmt.Fprintf(w, "| %d | %s | ours/stock | | %s | %s | %s | %s |\n", r.n, conc, t,
				ratio(float64(r.ours.rssBefore), float64(r.stock.rssBefore)), ratio(float64(r.ours.rssAfter), float64(r.stock.rssAfter)),
				ratio(r.ours.cpuSeconds, r.stock.cpuSeconds))
		}
	}
}

// printIdle prints our master's CPU while the slaves of each storm were
// idle but for keepalives (-idle).
func printIdle(w io.Writer, proto string, o options, rows []stormRow) {
	fmt.Fprintf(w, "\nIdle slaves over %s, keepalive_interval %v, after each storm of ours: master CPU over %v (ours = examples/master)\n\n",
		protocolName(proto), o.keepalive, o.idle)
	fmt.Fprintln(w, "| N | at once | master CPU | % of a core |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range rows {
		if !r.ours.ran || r.ours.idleSeconds == 0 {
			continue
		}
		conc := "all"
		if r.conc > 0 && r.conc < r.n {
			conc = fmt.Sprint(r.conc)
		}
		fmt.Fprintf(w, "| %d | %s | %.2f s in %.0f s | %.2f %% |\n", r.n, conc, r.ours.idleCPU, r.ours.idleSeconds,
			100*r.ours.idleCPU/r.ours.idleSeconds)
	}
}

func printThroughput(w io.Writer, proto string, o options, stock, ours throughputResult) {
	fmt.Fprintf(w, "\nBuild throughput over %s: %d slaves, each build one `true` shell step, %v measured after %v warm-up (ours = examples/master)\n\n",
		protocolName(proto), o.k, o.span, o.warmup)
	fmt.Fprintln(w, "| master | builds | builds/s | master CPU per build | RSS at the end | failures |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	rate := func(r throughputResult) float64 { return float64(r.builds) / r.seconds }
	perBuild := func(r throughputResult) string {
		if r.builds == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f ms", 1000*r.cpuSeconds/float64(r.builds))
	}
	for _, m := range []struct {
		name string
		r    throughputResult
	}{{"stock Buildbot 3.7", stock}, {"ours", ours}} {
		if !m.r.ran {
			fmt.Fprintf(w, "| %s | not run | | | | |\n", m.name)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %s | %s | %d |\n", m.name, m.r.builds, rate(m.r), perBuild(m.r), mib(m.r.rss), m.r.failures)
	}
	if stock.ran && ours.ran {
		fmt.Fprintf(w, "| ours/stock | | %s | | %s | |\n", ratio(rate(ours), rate(stock)), ratio(float64(ours.rss), float64(stock.rss)))
	}
}

func mib(kb int) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	switch r := a / b; {
	case r >= 10:
		return fmt.Sprintf("%.0f×", r)
	case r >= 1:
		return fmt.Sprintf("%.1f×", r)
	default:
		return fmt.Sprintf("%.2g×", r)
	}
}
