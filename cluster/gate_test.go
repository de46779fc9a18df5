package cluster_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/notify/notifytest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// holder is a slave.Holder whose connections answer a ping if alive says
// so.
type holder struct {
	mu      sync.Mutex
	alive   map[string]bool
	dropped []string
}

func (h *holder) PingAttached(_ context.Context, name, _ string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.alive[name] {
		return slave.ErrNotAttached
	}
	return nil
}

func (h *holder) DropAttached(name string, _ error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropped = append(h.dropped, name)
}

// countingKV counts the requests a member makes of etcd's key space.
type countingKV struct {
	clientv3.KV
	n atomic.Int64
}

func (c *countingKV) Txn(ctx context.Context) clientv3.Txn { c.n.Add(1); return c.KV.Txn(ctx) }
func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.n.Add(1)
	return c.KV.Get(ctx, key, opts...)
}
func (c *countingKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	c.n.Add(1)
	return c.KV.Put(ctx, key, val, opts...)
}
func (c *countingKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	c.n.Add(1)
	return c.KV.Delete(ctx, key, opts...)
}
func (c *countingKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	c.n.Add(1)
	return c.KV.Do(ctx, op)
}

// master is one master of a test cluster: a member and a slave manager
// gated by it, with the slaves "bot" and "bot2".
type master struct {
	member *cluster.Member
	m      *slave.Manager
	log    *testlog.Buffer
	kv     *countingKV
	cli    *clientv3.Client
	sent   *notifytest.Recorder
}

func newMaster(t *testing.T, srv *clustertest.Server, id string, ping time.Duration, opts ...slave.Option) *master {
	t.Helper()
	cli := rawClient(t, srv)
	kv := &countingKV{KV: cli.KV}
	cli.KV = kv
	ms := &master{kv: kv, cli: cli, log: &testlog.Buffer{}, sent: &notifytest.Recorder{}}
	logger := slog.New(slog.NewTextHandler(ms.log, nil))
	ms.member = join(t, srv, id, func(c *cluster.Config) {
		c.Client, c.PingTimeout, c.Logger, c.LeaseTTL = cli, ping, logger, time.Second
	})
	bot, err := slave.New("bot", "pw", opts...)
	if err != nil {
		t.Fatal(err)
	}
	bot2, err := slave.New("bot2", "pw", opts...)
	if err != nil {
		t.Fatal(err)
	}
	ms.m, err = slave.NewManager(slave.Config{Gate: ms.member, Logger: logger, Notifier: ms.sent, DuplicatePingTimeout: ping}, bot, bot2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.m.Close() })
	return ms
}

// attach attaches a new connection as bot and returns it with the error.
func (ms *master) attach(t *testing.T) (*slavetest.Conn, error) {
	t.Helper()
	return ms.attachAs(t, "bot")
}

func (ms *master) attachAs(t *testing.T, name string) (*slavetest.Conn, error) {
	t.Helper()
	c := slavetest.NewConn(slave.Info{})
	if err := ms.m.Authenticate(name, "pw", c.RemoteAddr()); err != nil {
		t.Fatal(err)
	}
	return c, ms.m.Attach(t.Context(), name, c)
}

func owner(t *testing.T, ms *master) string {
	t.Helper()
	o, ok, err := ms.member.Owner(t.Context(), "bot")
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return o.Master
}

// soon waits up to 5 s for cond, polling: etcd is real.
func soon(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAttachClaimsOnceAndDetachReleases(t *testing.T) {
	srv := clustertest.Start(t)
	a := newMaster(t, srv, "a", time.Second)
	before := a.kv.n.Load()
	c, err := a.attach(t)
	if err != nil {
		t.Fatal(err)
	}
	if n := a.kv.n.Load() - before; n != 1 {
		t.Errorf("attach made %d etcd requests, want 1", n)
	}
	if o := owner(t, a); o != "a" {
		t.Fatalf("owner after attach = %q, want a", o)
	}
	c.Drop(nil)
	soon(t, "bot released after its detach", func() bool { return owner(t, a) == "" })
}

func TestLiveOwnerKeepsTheName(t *testing.T) {
	srv := clustertest.Start(t)
	a := newMaster(t, srv, "a", 2*time.Second)
	b := newMaster(t, srv, "b", 2*time.Second)
	old, err := a.attach(t)
	if err != nil {
		t.Fatal(err)
	}
	before := b.kv.n.Load()
	start := time.Now()
	_, err = b.attach(t)
	var owned *cluster.OwnedError
	if !errors.Is(err, slave.ErrDuplicate) || !errors.As(err, &owned) || owned.Owner.Master != "a" {
		t.Fatalf("attach on b = %v, want a duplicate owned by a", err)
	}
	if n := b.kv.n.Load() - before; n != 1 {
		t.Errorf("refused duplicate made %d etcd requests, want 1 (the ask rides on the claim's txn)", n)
	}
	t.Logf("refused after %v", time.Since(start).Round(time.Millisecond))
	if len(old.Prints()) != 1 || old.Closed() {
		t.Errorf("a's connection: %d pings, closed %v; want 1 ping, open", len(old.Prints()), old.Closed())
	}
	if o := owner(t, a); o != "a" {
		t.Errorf("owner = %q, want a", o)
	}
}

// takeOver attaches bot on a with a connection that then stops answering,
// and again on b, which must take the name over with two etcd requests; it
// returns a's connection and how long b's attach took.
func takeOver(t *testing.T, a, b *master) (*slavetest.Conn, time.Duration) {
	t.Helper()
	old, err := a.attach(t)
	if err != nil {
		t.Fatal(err)
	}
	old.Silent(true)
	before := b.kv.n.Load()
	start := time.Now()
	if _, err := b.attach(t); err != nil {
		t.Fatalf("attach on b after a's connection stopped answering: %v", err)
	}
	waited := time.Since(start)
	if n := b.kv.n.Load() - before; n != 2 {
		t.Errorf("attach with a takeover made %d etcd requests, want 2", n)
	}
	if o := owner(t, a); o != "b" {
		t.Errorf("owner = %q, want b", o)
	}
	soon(t, "a drops its connection", func() bool { return old.Closed() })
	if st, _ := a.m.State("bot"); st.Attached {
		t.Error("bot still attached on a")
	}
	return old, waited
}

func TestDeadConnectionLosesTheName(t *testing.T) {
	srv := clustertest.Start(t)
	a := newMaster(t, srv, "a", 300*time.Millisecond)
	b := newMaster(t, srv, "b", 2*time.Second)
	_, waited := takeOver(t, a, b)
	if waited > 2*time.Second {
		t.Errorf("taken over after %v: b waited out its 3 s instead of a's answer (its 300ms ping)", waited)
	}
}

func TestUnansweringOwnerLosesTheName(t *testing.T) {
	srv := clustertest.Start(t)
	a := newMaster(t, srv, "a", time.Minute) // pings for longer than b waits
	b := newMaster(t, srv, "b", 300*time.Millisecond)
	if _, waited := takeOver(t, a, b); waited < 450*time.Millisecond {
		t.Errorf("taken over after %v, before b's 1.5 × 300ms", waited)
	}
	if n := len(a.log.Matching("another master took the slave's name")); n != 1 {
		t.Errorf("%d lines on a about the takeover, want 1:\n%s", n, a.log.String())
	}
	if o := owner(t, b); o != "b" {
		t.Errorf("owner after a dropped its connection = %q, want b (a must not release b's name)", o)
	}
}

func TestDeadMasterFreesItsNamesAtOnce(t *testing.T) {
	srv := clustertest.Start(t)
	a := newMaster(t, srv, "a", time.Minute)
	b := newMaster(t, srv, "b", time.Minute)
	if _, err := a.attach(t); err != nil {
		t.Fatal(err)
	}
	a.cli.Close() // a dies: its lease (TTL 1 s) expires
	soon(t, "a's lease expires", func() bool { return owner(t, b) == "" })
	start := time.Now()
	if _, err := b.attach(t); err != nil {
		t.Fatalf("attach on b after a died: %v", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("attach waited %v: it asked a dead master", waited)
	}
}

func TestSessionLostRefusesNewNamesOnly(t *testing.T) {
	srv := clustertest.Start(t)
	a := newMaster(t, srv, "a", time.Second)
	held, err := a.attach(t)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rawClient(t, srv).Get(t.Context(), "/test/members/a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	if _, err := rawClient(t, srv).Revoke(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.member.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session not ended after its lease was revoked")
	}
	for range 2 {
		if _, err := a.attachAs(t, "bot2"); !errors.Is(err, slave.ErrUnclaimed) || !errors.Is(err, cluster.ErrSessionLost) {
			t.Fatalf("attach of a new name after the session was lost = %v, want ErrUnclaimed and ErrSessionLost", err)
		}
	}
	if st, _ := a.m.State("bot"); !st.Attached || held.Closed() {
		t.Error("the slave held before the session was lost was dropped")
	}
	if n := len(a.log.Matching("slave gate unavailable")); n != 1 {
		t.Errorf("%d 'gate unavailable' lines, want 1:\n%s", n, a.log.String())
	}
}
