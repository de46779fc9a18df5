// Command loadslave is the load generator of the bench: it runs many minimal
// slaves in one process against a master, stock Buildbot or ours.
//
// The bench and the attach-storm benchmarks of protocol and protocol/pb
// use it. With -protocol msgpack (the default) each slave speaks
// msgpack_experimental_v7 over a WebSocket (-url ws://HOST:PORT/) and
// counts as attached at the master's second print "attached"; with
// -protocol pb it speaks Perspective Broker over TCP (-url HOST:PORT) and
// counts as attached when its login is answered, which both our master and
// the stock one do only after the whole attach sequence. A slave whose
// dial or connection fails before it attached dials again until the
// deadline (a stock master's accept backlog overflows in a storm); one
// whose connection is lost after it attached dials again until stdin
// closes. With -failover, -url may list several masters separated by
// commas (as our Go slave's -master): every slave dials the first until it
// attached, and once it attached, a lost connection or a failed dial
// makes it dial the next one (after the last, the first again), after a
// randomized back-off (internal/backoff: under 250 ms the first time,
// doubling to 5 s while dials fail, small again once attached); every
// slave reports worker_commands, so a stock master lets it run steps; with
// -exec, shell commands really run (/bin/sh -c) and are counted; with
// -concurrency, at most that many slaves dial or attach at once; with
// -sources K, slave i dials from the loopback address SourceAddr(i mod K),
// so that the master sees K hosts instead of one (Linux routes all of
// 127.0.0.0/8 to the loopback interface); and the result line says how
// many attached when not all did. On exit it writes
// to stderr why dials and connections failed.
//
// Talk to it on stdin/stdout, one line each:
//
//	-> ready
//	<- go
//	-> attached K N SECONDS FAILURES (K of N slaves completed the attach sequence, SECONDS after "go";
//	                                  FAILURES dials or connections that failed before an attach)
//	<- count                          (any number of times)
//	-> count BUILDS                   (shell commands completed so far)
//
// and with -failover, whenever every slave is attached again after some
// lost their connection (a master died), without being asked, possibly
// before "attached" if a connection was lost during the first attaches:
//
//	-> reattached K N SECONDS FAILURES (K attaches of slaves that had lost their connection, SECONDS
//	                                    from the first loss to the last of them; FAILURES dials or
//	                                    connections that failed before an attach meanwhile)
//
// It exits when stdin closes, dropping every connection. The password is
// read from the environment variable LOADSLAVE_PASSWORD, never a flag.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buildslave/buildslave/internal/backoff"
	"github.com/buildslave/buildslave/protocol/wire"
)

// commands is what the slave claims to run, with the stock worker's versions.
var commands = map[string]any{}

func init() {
	for _, c := range []string{"shell", "mkdir", "rmdir", "listdir", "stat", "glob", "rmfile", "cpdir",
		"upload_file", "upload_directory", "download_file"} {
		commands[c] = "3.1"
	}
}

type slaves struct {
	urls                      []string // -url: the masters, dialed in turn with -failover
	prefix, password, basedir string
	pb                        bool // -protocol pb
	exec, failover            bool
	n, sources                int
	deadline                  time.Time

	attached, dialErrors, builds atomic.Int64
	allAttached                  chan struct{}
	slots                        chan struct{} // with -concurrency: one per slave between dial and attach
	errMu                        sync.Mutex
	errs                         map[string]int // why dials and connections failed, for the log
	lastAttach                   atomic.Int64   // unix nanoseconds of the latest attach
	ctx                          context.Context
	wg                           sync.WaitGroup

	// With -failover: the slaves attached now, and since when, by how
	// many attaches and from what count of failures some are not (zero:
	// all are, or not all attached yet).
	upMu         sync.Mutex
	up           int
	lostSince    time.Time
	reattaches   int
	errorsAtLoss int64
}

// failoverBackoff is the wait of a slave with -failover before it dials the
// next master: small after a lost connection, so that a fleet moves within
// a second or so, spread out so that it does not reach the next master all
// at once.
var failoverBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 5 * time.Second, Jitter: backoff.Full}

func main() {
	s := &slaves{allAttached: make(chan struct{})}
	url := flag.String("url", "", "the master: ws://HOST:PORT/ for msgpack, HOST:PORT for pb; with -failover, several separated by commas")
	flag.BoolVar(&s.failover, "failover", false, "once attached, dial the next master of -url when the connection is lost or a dial fails, and report re-attaches")
	protocol := flag.String("protocol", "msgpack", "msgpack (msgpack_experimental_v7 over a WebSocket) or pb (Perspective Broker over TCP)")
	flag.IntVar(&s.n, "n", 1000, "number of slaves")
	flag.StringVar(&s.prefix, "prefix", "s", "slave name prefix: slaves are PREFIX0 ... PREFIX(n-1)")
	flag.StringVar(&s.basedir, "basedir", "", "with -exec: the directory under which each slave has its base directory")
	flag.BoolVar(&s.exec, "exec", false, "really run shell commands (/bin/sh -c) and count them")
	concurrency := flag.Int("concurrency", 0, "at most this many slaves dialing or attaching at once (0: all at once)")
	flag.IntVar(&s.sources, "sources", 0, "dial from this many loopback addresses, 127.1.0.1 onwards, slave i from the (i mod sources)-th (0: the system's choice, 127.0.0.1)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up waiting for attaches this long after go")
	flag.Parse()
	s.password = os.Getenv("LOADSLAVE_PASSWORD")
	s.urls = strings.Split(*url, ",")
	if *url == "" || slices.Contains(s.urls, "") || s.n <= 0 || (s.exec && s.basedir == "") || s.sources < 0 || s.sources > maxSources {
		fmt.Fprintf(os.Stderr, "loadslave: need -url (no empty master), -n > 0, -basedir with -exec, and -sources from 0 to %d\n", maxSources)
		os.Exit(2)
	}
	if len(s.urls) > 1 && !s.failover {
		fmt.Fprintf(os.Stderr, "loadslave: -url %q: several masters need -failover\n", *url)
		os.Exit(2)
	}
	switch *protocol {
	case "msgpack":
	case "pb":
		s.pb = true
		for i, u := range s.urls {
			s.urls[i] = hostPort(u)
		}
	default:
		fmt.Fprintf(os.Stderr, "loadslave: -protocol %q: want msgpack or pb\n", *protocol)
		os.Exit(2)
	}

	if *concurrency > 0 {
		s.slots = make(chan struct{}, *concurrency)
	}
	s.errs = map[string]int{}

	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	if !in.Scan() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.ctx = ctx
	start := time.Now()
	s.deadline = start.Add(*timeout)
	for i := range s.n {
		s.wg.Go(func() { s.run(fmt.Sprintf("%s%d", s.prefix, i)) })
	}
	select {
	case <-s.allAttached:
	case <-time.After(time.Until(s.deadline)):
	}
	elapsed := time.Since(start)
	if k := s.attached.Load(); k > 0 && k < int64(s.n) {
		elapsed = time.Unix(0, s.lastAttach.Load()).Sub(start) // the last one that made it
	}
	fmt.Printf("attached %d %d %.3f %d\n", s.attached.Load(), s.n, elapsed.Seconds(), s.dialErrors.Load())
	for in.Scan() {
		if in.Text() == "count" {
			fmt.Printf("count %d\n", s.builds.Load())
		}
	}
	cancel()
	s.wg.Wait()
	for e, n := range s.errs {
		fmt.Fprintf(os.Stderr, "loadslave: %d× %s\n", n, e)
	}
}

// run keeps one slave connected: it dials again after a failure until the
// slave has attached once or the deadline passed, and stays until stdin
// closes; with -failover, once attached it dials the next master after a
// failure.
func (s *slaves) run(name string) {
	var attachedOnce atomic.Bool
	master := 0 // the index in s.urls of the master to dial
	bo := backoff.Counter{Policy: failoverBackoff}
	for s.ctx.Err() == nil {
		if !attachedOnce.Load() && time.Now().After(s.deadline) {
			return
		}
		a := &attempt{name: name, url: s.urls[master], attachedOnce: &attachedOnce, release: func() {}}
		if s.slots != nil && !attachedOnce.Load() {
			select {
			case s.slots <- struct{}{}:
			case <-s.ctx.Done():
				return
			}
			var once sync.Once
			a.release = func() { once.Do(func() { <-s.slots }) }
		}
		session := s.session
		if s.pb {
			session = s.pbSession
		}
		if err := session(a); err != nil {
			s.dialErrors.Add(1)
			s.errMu.Lock()
			s.errs[addrs.ReplaceAllString(err.Error(), "ADDR")]++
			s.errMu.Unlock()
		}
		a.release()
		wait := 200*time.Millisecond + rand.N(800*time.Millisecond)
		if s.failover && attachedOnce.Load() {
			if a.attached.Load() {
				bo.Reset()
				if s.ctx.Err() == nil {
					s.changed(-1, false)
				}
			}
			master = (master + 1) % len(s.urls)
			wait = bo.Next()
		}
		backoff.Wait(s.ctx, wait)
	}
}

// attempt is one connection of one slave.
type attempt struct {
	name, url    string
	attachedOnce *atomic.Bool // the slave attached before, over this connection or another
	release      func()       // gives back the -concurrency slot; called once attached
	attached     atomic.Bool  // this connection completed the attach sequence
}

// attach counts the attempt's slave attached: the first time for this
// slave, or again after it lost a connection.
func (s *slaves) attach(a *attempt) {
	a.attached.Store(true)
	first := a.attachedOnce.CompareAndSwap(false, true)
	if first {
		a.release()
		s.didAttach()
	}
	if s.failover {
		s.changed(1, first)
	}
}

// changed counts, with -failover, one slave more attached (+1; first: its
// first attach) or one fewer (-1: its connection was lost), and prints the
// reattached line when every slave is attached again after losses.
func (s *slaves) changed(delta int, first bool) {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	s.up += delta
	switch {
	case delta < 0 && s.lostSince.IsZero():
		s.lostSince, s.reattaches, s.errorsAtLoss = time.Now(), 0, s.dialErrors.Load()
	case delta > 0 && !first:
		s.reattaches++
	}
	if s.up == s.n && !s.lostSince.IsZero() {
		fmt.Printf("reattached %d %d %.3f %d\n", s.reattaches, s.n, time.Since(s.lostSince).Seconds(), s.dialErrors.Load()-s.errorsAtLoss)
		s.lostSince = time.Time{}
	}
}

// dialDeadline bounds an attempt's dial and attach: a minute past the
// deadline of the first attaches, or a minute from now for a slave that
// attached before (it redials for as long as the program runs).
func (s *slaves) dialDeadline(a *attempt) time.Time {
	if a.attachedOnce.Load() {
		return time.Now().Add(time.Minute)
	}
	return s.deadline.Add(time.Minute)
}

// session is one connection; it returns the dial's error, or nil once the
// connection ended after an attach. It calls s.attach once attached.
var addrs = regexp.MustCompile(`[0-9.]+:[0-9]+`)

func (s *slaves) session(a *attempt) error {
	dctx, cancel := context.WithDeadline(s.ctx, s.dialDeadline(a))
	defer cancel()
	d := &wire.Dialer{WebSocketConfig: wire.WebSocketConfig{WriteTimeout: time.Minute}, NetDialContext: s.dial(a.name)}
	t, err := d.Dial(dctx, a.url, a.name, s.password)
	if err != nil {
		return err
	}
	base := "/nonexistent/" + a.name
	if s.exec {
		base = filepath.Join(s.basedir, a.name)
	}
	var prints atomic.Int64
	var c *wire.Conn
	c = wire.NewConn(t, func(_ context.Context, req wire.Message) (any, error) {
		switch req.Op() {
		case "print":
			if prints.Add(1) == 2 {
				s.attach(a)
			}
		case "get_worker_info":
			return map[string]any{"basedir": base, "system": "posix", "version": "loadslave",
				"numcpus": 1, "worker_commands": commands, "environ": map[string]any{}}, nil
		case "start_command":
			id, _ := req.String("command_id")
			cmd, _ := req.String("command_name")
			args, _ := req["args"].(map[string]any)
			s.wg.Go(func() { s.command(c, id, cmd, args) })
		}
		return nil, nil
	})
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	c.Serve()
	if !a.attachedOnce.Load() && s.ctx.Err() == nil {
		return fmt.Errorf("connection lost before attach: %v", context.Cause(c.Context()))
	}
	return nil
}

// maxSources is how many source addresses -sources may ask for: 127.1.0.1
// to 127.254.253.254.
const maxSources = 254 * 254 * 254

// SourceAddr is the i-th loopback source address: 127.1.0.1, 127.1.0.2, ...
// 127.1.0.254, 127.1.1.1, ...
func SourceAddr(i int) net.IP {
	return net.IPv4(127, byte(1+i/(254*254)), byte(i/254%254), byte(i%254+1))
}

// dialer is the net.Dialer of the slave named PREFIXi: from its source
// address with -sources.
func (s *slaves) dialer(name string) *net.Dialer {
	d := &net.Dialer{}
	if i, err := strconv.Atoi(strings.TrimPrefix(name, s.prefix)); err == nil && s.sources > 0 {
		d.LocalAddr = &net.TCPAddr{IP: SourceAddr(i % s.sources)}
	}
	return d
}

// dial dials as the slave named name (see dialer), writing as the stock
// slave does (twistedConn).
func (s *slaves) dial(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := s.dialer(name).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &twistedConn{Conn: c}, nil
	}
}

// didAttach counts one more slave attached.
func (s *slaves) didAttach() {
	s.lastAttach.Store(time.Now().UnixNano())
	if s.attached.Add(1) == int64(s.n) {
		close(s.allAttached)
	}
}

// command answers one remote command: listdir finds every builder directory
// there, shell runs for real with -exec, everything else succeeds at once.
func (s *slaves) command(c *wire.Conn, id, name string, args map[string]any) {
	ctx := c.Context()
	rc := 0
	var updates []any
	switch name {
	case "listdir":
		updates = append(updates, []any{"files", []any{}})
	case "mkdir":
		if s.exec {
			paths, _ := args["paths"].([]any)
			for _, p := range paths {
				if p, ok := p.(string); ok {
					os.MkdirAll(p, 0o755)
				}
			}
		}
	case "shell":
		if s.exec {
			rc = shell(args)
			s.builds.Add(1) // before the master hears of it, so a count after the build sees it
		}
	}
	updates = append(updates, []any{"rc", rc})
	// As the stock slave does: the last update and the completion go out
	// together, then their answers are waited for.
	for _, p := range []*wire.Pending{
		send(c, "update", map[string]any{"command_id": id, "args": updates}),
		send(c, "complete", map[string]any{"command_id": id, "args": nil}),
	} {
		if p != nil {
			p.Wait(ctx)
		}
	}
}

// send sends a request; nil if the connection is gone.
func send(c *wire.Conn, op string, fields map[string]any) *wire.Pending {
	p, _ := c.Send(op, fields)
	return p
}

// shell runs a shell command's argument "command": a string through
// /bin/sh -c, a list as argv. It returns the exit code, -1 if it did not run.
func shell(args map[string]any) int {
	var argv []string
	switch cmd := args["command"].(type) {
	case string:
		argv = []string{"/bin/sh", "-c", cmd}
	case []any:
		for _, a := range cmd {
			switch a := a.(type) {
			case string:
				argv = append(argv, a)
			case []byte:
				argv = append(argv, string(a))
			}
		}
	}
	if len(argv) == 0 {
		return -1
	}
	p := exec.Command(argv[0], argv[1:]...)
	if wd, ok := args["workdir"].(string); ok {
		os.MkdirAll(wd, 0o755)
		p.Dir = wd
	}
	p.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	if err := p.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return -1
	}
	return 0
}
