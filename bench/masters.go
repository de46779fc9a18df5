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
	// URL is the slave protocol's ws:// URL.
	URL() string
	// Stop stops the master; it is safe to call more than once.
	Stop()
}

// stockMaster is a stock Buildbot master run with `buildbot start DIR`.
type stockMaster struct {
	dir, home string
	port, pid int
	stopOnce  sync.Once
}

// startStock creates a stock master in dir/stock with cfg and starts it.
// On error it has already stopped whatever it started.
func startStock(ctx context.Context, dir string, mode benchcfg.StockMode, n int, password string) (*stockMaster, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &stockMaster{dir: filepath.Join(dir, "stock"), home: dir, port: port}
	env := minimalEnv(dir)
	if _, err := run(ctx, 2*time.Minute, env, "buildbot", "create-master", "--quiet", m.dir); err != nil {
		return nil, err
	}
	pwFile := filepath.Join(dir, "slave.password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	cfg, err := benchcfg.Stock(mode, port, n, pwFile)
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

func (m *stockMaster) PID() int    { return m.pid }
func (m *stockMaster) URL() string { return fmt.Sprintf("ws://127.0.0.1:%d/", m.port) }

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
	listen string
	http   string
}

// startOurs writes cfg (made by gen from the listen and http addresses)
// to dir/ours.toml and starts bin -config on it; it returns once the slave
// port accepts connections.
func startOurs(ctx context.Context, bin, dir string, gen func(listen, http string) benchcfg.Config) (*ourMaster, error) {
	lp, err := freePort()
	if err != nil {
		return nil, err
	}
	hp, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &ourMaster{listen: fmt.Sprintf("127.0.0.1:%d", lp), http: fmt.Sprintf("127.0.0.1:%d", hp)}
	b, err := gen(m.listen, m.http).TOML()
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
func (m *ourMaster) URL() string { return "ws://" + m.listen + "/" }
func (m *ourMaster) Stop()       { m.p.stop(10 * time.Second) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// isTwistd reports whether pid runs twistd (so a recycled pid is not killed).
func isTwistd(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "twistd")
}
