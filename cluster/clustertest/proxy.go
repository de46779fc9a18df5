package clustertest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy is a loopback TCP proxy in front of one etcd member that a test
// can cut and restore, to partition a master from etcd.
type Proxy struct {
	// Endpoint is the proxy's client URL, for cluster.Config.Endpoints.
	Endpoint string
	target   string
	ln       net.Listener
	mu       sync.Mutex
	cut      bool
	conns    map[net.Conn]bool
}

// NewProxy starts a proxy to the member at endpoint (a client URL) on a
// free loopback port, closed in t.Cleanup.
func NewProxy(t testing.TB, endpoint string) *Proxy {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatalf("clustertest: proxy target %q: %v", endpoint, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("clustertest: proxy: %v", err)
	}
	p := &Proxy{Endpoint: "http://" + ln.Addr().String(), target: u.Host, ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
	})
	go p.serve()
	return p
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

// forward copies between c and a new connection to the member, unless the
// proxy is cut.
func (p *Proxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, up) {
		c.Close()
		up.Close()
		return
	}
	go func() {
		io.Copy(up, c)
		up.Close()
	}()
	io.Copy(c, up)
	c.Close()
}

// track registers the two ends of a connection, or reports that the proxy
// is cut.
func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

// Cut closes every proxied connection and closes new ones at once, until
// Restore: the master behind it cannot reach etcd.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Restore forwards new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}
