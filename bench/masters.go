package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/buildslave/buildslave/bench/internal/benchcfg"
)

// master is one running master under test.
type master interface {
	// PID is the process whose RSS and CPU time are measured.
	PID() int
	// URL is where the load generator dials: ws://HOST:PORT/ for msgpack,
	// HOST:PORT for PB.
	URL() string
	// Stop stops the master; it is safe to call more than once.
	Stop()
}

// stockMaster is a stock Buildbot master run with `buildbot start DIR`.
type stockMaster struct {
	dir, home string
	proto     string
	port, pid int
	stopOnce  sync.Once
}

// startStock creates a stock master in dir/stock serving proto and starts
// it. On error it has already stopped whatever it started.
func startStock(ctx context.Context, dir string, mode benchcfg.StockMode, proto string, n int, password string) (*stockMaster, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &stockMaster{dir: filepath.Join(dir, "stock"), home: dir, proto: proto, port: port}
	env := minimalEnv(dir)
	if _, err := run(ctx, 2*time.Minute, env, "buildbot", "create-master", "--quiet", m.dir); err != nil {
		return nil, err
	}
	pwFile := filepath.Join(dir, "slave.password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	cfg, err := benchcfg.Stock(mode, proto, port, n, pwFile)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(m.dir, "master.cfg"), cfg, 0o600); err != nil {
		return nil, err
	}
	startTimeout := 120 + n/20 // seconds; a master with 10,000 workers writes them all to its database first
	registerStop(m)
	_, err = run(ctx, time.Duration(startTimeout+30)*time.Second, env, "buildbot", "start",
		"--start_timeout="+strconv.Itoa(startTimeout), m.dir)
	if b, perr := os.ReadFile(filepath.Join(m.dir, "twistd.pid")); perr == nil {
		m.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if err == nil && m.pid == 0 {
		err = errors.New("buildbot start: no twistd.pid")
	}
	if err != nil {
		m.Stop()
		return nil, fmt.Errorf("%w (see %s)", err, filepath.Join(m.dir, "twistd.log"))
	}
	return m, nil
}

func (m *stockMaster) PID() int { return m.pid }
func (m *stockMaster) URL() string {
	return slaveURL(m.proto, fmt.Sprintf("127.0.0.1:%d", m.port))
}

// slaveURL is where a slave of proto dials a master listening on addr.
func slaveURL(proto, addr string) string {
	if proto == benchcfg.PB {
		return addr
	}
	return "ws://" + addr + "/"
}

// Stop runs `buildbot stop DIR` and kills twistd if it is still there.
func (m *stockMaster) Stop() { m.stopOnce.Do(m.stop) }

func (m *stockMaster) stop() {
	defer unregisterStop(m)
	_, err := run(context.Background(), 90*time.Second, minimalEnv(m.home), "buildbot", "stop", m.dir)
	if m.pid == 0 {
		if b, err := os.ReadFile(filepath.Join(m.dir, "twistd.pid")); err == nil {
			m.pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	if m.pid != 0 && alive(m.pid) && isTwistd(m.pid) {
		logf("buildbot stop %s did not stop twistd (%v): killing pid %d", m.dir, firstLine(fmt.Sprint(err)), m.pid)
		killPID(m.pid)
	}
}

// ourMaster is our master (examples/master) run
// with -config FILE.
type ourMaster struct {
	p      *proc
	proto  string
	listen string // proto's address
	http   string
}

// startOurs writes cfg (made by gen from the addresses: PB, msgpack and
// HTTP on free loopback ports) to dir/ours.toml and starts bin -config on
// it; it returns once proto's port accepts connections.
func startOurs(ctx context.Context, bin, dir, proto string, gen func(benchcfg.Addrs) benchcfg.Config) (*ourMaster, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	a := benchcfg.Addrs{PB: fmt.Sprintf("127.0.0.1:%d", ports[0]), Msgpack: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		HTTP: fmt.Sprintf("127.0.0.1:%d", ports[2])}
	m := &ourMaster{proto: proto, listen: a.Msgpack, http: a.HTTP}
	if proto == benchcfg.PB {
		m.listen = a.PB
	}
	b, err := gen(a).TOML()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "ours.toml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	if m.p, err = startProc([]string{bin, "-config", cfgPath}, minimalEnv(dir), filepath.Join(dir, "ours.log"), nil); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", m.listen); err == nil {
			c.Close()
			return m, nil
		}
		select {
		case <-m.p.done:
			return nil, fmt.Errorf("%s exited: %v (see %s)", bin, m.p.err, filepath.Join(dir, "ours.log"))
		case <-ctx.Done():
			m.Stop()
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("%s: %s not listening after 2 min", bin, m.listen)
		}
	}
}

func (m *ourMaster) PID() int    { return m.p.cmd.Process.Pid }
func (m *ourMaster) URL() string { return slaveURL(m.proto, m.listen) }
func (m *ourMaster) Stop()       { m.p.stop(10 * time.Second) }

func freePort() (int, error) {
	p, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close() // held until all are chosen, so that they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// isTwistd reports whether pid runs twistd (so a recycled pid is not killed).
func isTwistd(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "twistd")
}
