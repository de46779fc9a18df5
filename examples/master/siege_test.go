package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/slave"
)

// envHoldSockets makes the test binary a holder of hostile sockets (see
// holdSockets); its value is "ADDR N NET": N silent connections to ADDR
// from 100 loopback addresses 127.NET.0.1 to 127.NET.0.100.
const envHoldSockets = "EXAMPLE_MASTER_TEST_HOLD_SOCKETS"

// holdSockets opens the silent connections spec asks for, prints "held N
// failed F" and holds them until its stdin ends. A dial that the master's
// kernel does not answer within a second (its accept queue is full) is
// counted as failed. Each holder is a process of its own: a process may
// have at most 20,000 open files on many machines, fewer than 30,000.
func holdSockets(spec string, stdin io.Reader, stdout io.Writer) int {
	var addr string
	var n, net3 int
	if _, err := fmt.Sscan(spec, &addr, &n, &net3); err != nil {
		fmt.Fprintf(stdout, "bad %s: %v\n", envHoldSockets, err)
		return 2
	}
	const workers = 500
	var (
		mu      sync.Mutex
		conns   []net.Conn
		failed  atomic.Int64
		dialers sync.WaitGroup
	)
	for w := range workers {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, byte(net3), 0, byte(1+w%100))}}
		dialers.Go(func() {
			for i := w; i < n; i += workers {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	dialers.Wait()
	fmt.Fprintf(stdout, "held %d failed %d\n", len(conns), failed.Load())
	io.Copy(io.Discard, stdin)
	return 0
}

// besiege starts a holder of n hostile sockets to addr from 127.net3.0.x
// and returns how many it holds and how many dials failed; the holder
// ends with the test.
func besiege(t *testing.T, addr string, n, net3 int) (held, failed int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", envHoldSockets, addr, n, net3))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("holder of sockets to %s: %v", addr, err)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, err2 := fmt.Sscanf(line, "held %d failed %d", &held, &failed); err != nil || err2 != nil {
		t.Fatalf("holder of sockets to %s said %q: %v", addr, line, err)
	}
	return held, failed
}

// answers reports whether the master answers a connection to addr within
// 100 ms: its accept queue is empty. A PB master speaks first; to the
// others the connection sends a GET.
func answers(addr string, get bool) bool {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if get {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: master\r\n\r\n")
	}
	_, err = c.Read(make([]byte, 1))
	return err == nil
}

// openFiles is how many files this process has open; -1 without /proc.
func openFiles() int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(fds)
}

const siegedSlaves = `
[master]
[[slaves]]
name = "m1"
password = "pw"
[[slaves]]
name = "p1"
password = "pw"
[[slaves]]
name = "m2"
password = "pw"
[[slaves]]
name = "p2"
password = "pw"
[[builders]]
name = "b"
slaves = ["m1", "p1", "m2", "p2"]
  [[builders.steps]]
  shell = "true"
`

// TestSlavesAttachWhileEveryPortIsBesieged opens 10,000 silent sockets
// on each of the master's three ports (the PB and msgpack slave ports and
// the web port), from 100 loopback addresses per port, and holds them.
// While they are being opened, and again once they are all held and the
// accept queues have drained, a real slave attaches over each protocol
// from another address and the status page is loaded; the test logs how
// long each took and how many files the master holds. The goal is an
// attach within 1 s once they are held; the test fails only past 30 s.
// While they are being opened, the accept queues overflow (the dials the
// holders count as unanswered) and a real slave's SYN may be dropped
// too, which costs it the 1 s of a SYN retransmission.
func TestSlavesAttachWhileEveryPortIsBesieged(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 30,000 sockets")
	}
	if runtime.GOOS != "linux" {
		t.Skip("needs the loopback addresses of 127.0.0.0/8 as sources, as Linux has them")
	}
	const hostile = 10000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		t.Logf("open files: limit %d (hard %d) per process; the hostile sockets are held by three other processes", lim.Cur, lim.Max)
	}
	m, out := startMaster(t, testConfig(t, siegedSlaves))
	idleFiles := openFiles()
	events, cancel := m.mgr.Subscribe()
	defer cancel()
	attach := func(name, proto, addr string) time.Duration {
		start := time.Now()
		runGoSlave(t, client.Config{Master: addr, Protocol: proto, Name: name, Password: "pw"})
		timeout := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Kind == slave.Attached && ev.Slave == name {
					return time.Since(start)
				}
			case <-timeout:
				t.Fatalf("the %s slave %s did not attach within 30 s under siege\n%s", proto, name, out.String())
			}
		}
	}
	status := func() string {
		start := time.Now()
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Get("http://" + m.webAddr + "/api/status")
		if err != nil {
			return fmt.Sprintf("failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
		resp.Body.Close()
		return fmt.Sprintf("%s in %v", resp.Status, time.Since(start))
	}

	start := time.Now()
	var holders sync.WaitGroup
	for i, p := range []struct{ name, addr string }{{"PB", m.pbAddr}, {"msgpack", m.protoAddr}, {"web", m.webAddr}} {
		holders.Go(func() {
			held, failed := besiege(t, p.addr, hostile, 2+i)
			t.Logf("%s port: %d hostile sockets held, %d dials unanswered within 1 s", p.name, held, failed)
		})
	}
	eventually(t, 30*time.Second, "the master at its caps", func() bool { return openFiles() > idleFiles+1000 })
	t.Logf("while the sockets are opened (the master holds %d files): a real msgpack slave attached in %v, a PB one in %v; the status page: %s",
		openFiles(), attach("m1", client.Msgpack, m.protoAddr), attach("p1", client.PB, m.pbAddr), status())
	holders.Wait()
	t.Logf("all sockets opened in %v; the master holds %d open files (%d before)", time.Since(start), openFiles(), idleFiles)
	// The kernel's accept queues still hold the flood's last connections,
	// which the master accepts (closing as many older ones) before a new
	// one: measure once each port answers a new connection quickly.
	drained := time.Now()
	eventually(t, 30*time.Second, "the accept queues drained", func() bool {
		return answers(m.pbAddr, false) && answers(m.protoAddr, true) && answers(m.webAddr, true)
	})
	t.Logf("the accept queues drained in %v", time.Since(drained))
	t.Logf("while they are held: a real msgpack slave attached in %v, a PB one in %v; the status page: %s",
		attach("m2", client.Msgpack, m.protoAddr), attach("p2", client.PB, m.pbAddr), status())
	if strings.Contains(out.String(), "too many open files") {
		t.Errorf("the master ran out of files:\n%s", out.String())
	}
}
