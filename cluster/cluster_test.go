package cluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/cluster/clustertest"
	"github.com/buildslave/buildslave/slave"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func join(t *testing.T, srv *clustertest.Server, id string, mod func(*cluster.Config)) *cluster.Member {
	t.Helper()
	cfg := cluster.Config{
		ID:        id,
		Addrs:     map[string]string{"pb": id + ":9989"},
		Endpoints: srv.Endpoints,
		Prefix:    "/test/",
		Logger:    quiet,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	m, err := cluster.Join(ctx, cfg)
	if err != nil {
		t.Fatalf("Join(%q): %v", id, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func rawClient(t testing.TB, srv *clustertest.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func ids(ms []cluster.MemberInfo) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.ID)
	}
	return strings.Join(s, ",")
}

func next(t *testing.T, ch <-chan cluster.MemberEvent, within time.Duration) cluster.MemberEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(within):
		t.Fatalf("no member event within %v", within)
	}
	panic("unreachable")
}

func TestMembersSeeEachOtherAndDuplicateIDRefused(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	a := join(t, srv, "a", nil)
	events, err := a.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, events, 5*time.Second); ev.Type != cluster.Joined || ev.Member.ID != "a" {
		t.Fatalf("first event = %+v, want a (itself) joined", ev)
	}
	b := join(t, srv, "b", nil)

	if ev := next(t, events, 5*time.Second); ev.Type != cluster.Joined || ev.Member.ID != "b" || ev.Member.Addrs["pb"] != "b:9989" || ev.Err != nil {
		t.Fatalf("event = %+v, want b joined", ev)
	}
	for _, m := range []*cluster.Member{a, b} {
		got, err := m.Members(ctx)
		if err != nil || ids(got) != "a,b" {
			t.Fatalf("%s.Members = %q, %v; want a,b", m.ID(), ids(got), err)
		}
	}

	_, err = cluster.Join(ctx, cluster.Config{ID: "a", Endpoints: srv.Endpoints, Prefix: "/test/", Logger: quiet})
	var dup *cluster.DuplicateIDError
	if !errors.As(err, &dup) || dup.Existing.Addrs["pb"] != "a:9989" || !strings.Contains(err.Error(), `master id "a" is already live`) {
		t.Fatalf("second Join(a) = %v, want a DuplicateIDError naming a", err)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, events, 5*time.Second); ev.Type != cluster.Left || ev.Member.ID != "b" {
		t.Fatalf("event = %+v, want b left", ev)
	}
	if got, err := a.Members(ctx); err != nil || ids(got) != "a" {
		t.Fatalf("Members after b closed = %q, %v; want a", ids(got), err)
	}
}

func TestClaims(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	a := join(t, srv, "a", nil)
	b := join(t, srv, "b", nil)
	a.Hold(&holder{alive: map[string]bool{"bot1": true}})

	if err := a.Claim(ctx, "bot1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, "bot1"); err != nil {
		t.Fatalf("claiming a name already held: %v", err)
	}
	err := b.Claim(ctx, "bot1")
	var owned *cluster.OwnedError
	if !errors.As(err, &owned) || owned.Owner.Master != "a" || owned.Owner.Addrs["pb"] != "a:9989" || !errors.Is(err, slave.ErrDuplicate) {
		t.Fatalf("b.Claim(bot1) = %v, want an OwnedError naming a", err)
	}
	if o, ok, err := b.Owner(ctx, "bot1"); err != nil || !ok || o.Master != "a" || o.Addrs["pb"] != "a:9989" {
		t.Fatalf("Owner(bot1) = %+v, %v, %v; want a", o, ok, err)
	}
	if _, ok, err := b.Owner(ctx, "nobody"); err != nil || ok {
		t.Fatalf("Owner(nobody) = %v, %v; want none", ok, err)
	}

	// Release by a non-owner leaves the name alone; by the owner frees it.
	if err := b.Release(ctx, "bot1", nil); err != nil {
		t.Fatal(err)
	}
	if o, _, _ := b.Owner(ctx, "bot1"); o.Master != "a" {
		t.Fatalf("after b.Release, owner = %q, want a", o.Master)
	}
	if err := a.Release(ctx, "bot1", nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, "bot1"); err != nil {
		t.Fatalf("b.Claim after a released: %v", err)
	}

	// Close frees a master's names at once.
	if err := b.Claim(ctx, "bot2"); err != nil {
		t.Fatal(err)
	}
	if owners, err := a.Owners(ctx); err != nil || len(owners) != 2 {
		t.Fatalf("Owners = %+v, %v; want bot1 and bot2", owners, err)
	}
	b.Close()
	if err := a.Claim(ctx, "bot2"); err != nil {
		t.Fatalf("a.Claim after b closed: %v", err)
	}
	if err := b.Claim(ctx, "bot3"); !errors.Is(err, cluster.ErrSessionLost) {
		t.Fatalf("Claim after Close = %v, want ErrSessionLost", err)
	}

	// A master whose lease ended refuses to claim.
	c := join(t, srv, "c", nil)
	raw := rawClient(t, srv)
	resp, err := raw.Get(ctx, "/test/members/c")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
	if _, err := raw.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if err := c.Claim(ctx, "bot4"); !errors.Is(err, cluster.ErrSessionLost) {
		t.Fatalf("Claim after the lease ended = %v, want ErrSessionLost", err)
	}
	if _, err := c.RecordStart(ctx, "latent1", "ec2"); !errors.Is(err, cluster.ErrSessionLost) {
		t.Fatalf("RecordStart after the lease ended = %v, want ErrSessionLost", err)
	}
	// Its names went with its lease: Release has nothing to ask etcd.
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("c.Done not closed 10 s after its lease was revoked")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Release(cancelled, "bot4", nil); err != nil {
		t.Fatalf("Release after the lease ended = %v, want nil without asking etcd", err)
	}
}

func TestLeaseExpiryFreesNames(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	b := join(t, srv, "b", nil)
	events, err := b.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, events, 5*time.Second); ev.Type != cluster.Joined || ev.Member.ID != "b" {
		t.Fatalf("first event = %+v, want b (itself) joined", ev)
	}

	// a dials its own client; closing that client is a master dying: its
	// lease is not revoked, it expires.
	cli := rawClient(t, srv)
	a := join(t, srv, "a", func(c *cluster.Config) { c.Client = cli; c.LeaseTTL = 2 * time.Second })
	if ev := next(t, events, 5*time.Second); ev.Type != cluster.Joined || ev.Member.ID != "a" {
		t.Fatalf("event = %+v, want a joined", ev)
	}
	if err := a.Claim(ctx, "bot1"); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	cli.Close()

	ev := next(t, events, 15*time.Second)
	if ev.Type != cluster.Left || ev.Member.ID != "a" {
		t.Fatalf("event = %+v, want a left", ev)
	}
	t.Logf("a's departure seen %v after it died (TTL 2s)", time.Since(died).Round(100*time.Millisecond))
	if got, err := b.Members(ctx); err != nil || ids(got) != "b" {
		t.Fatalf("Members = %q, %v; want b", ids(got), err)
	}
	if _, ok, err := b.Owner(ctx, "bot1"); err != nil || ok {
		t.Fatalf("bot1 still owned after a's lease expired (%v)", err)
	}
	if err := b.Claim(ctx, "bot1"); err != nil {
		t.Fatalf("b.Claim(bot1) after a died: %v", err)
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a.Done not closed after its client closed")
	}
}

func TestIntents(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	a := join(t, srv, "a", nil)
	b := join(t, srv, "b", nil)

	in, err := a.RecordStart(ctx, "latent1", "ec2")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.RecordStart(ctx, "latent1", "ec2")
	var exists *cluster.IntentExistsError
	if !errors.As(err, &exists) || exists.Existing.Master != "a" {
		t.Fatalf("b.RecordStart(latent1) = %v, want an IntentExistsError naming a", err)
	}
	if err := in.SetInstance(ctx, "i-0123"); err != nil {
		t.Fatal(err)
	}
	got, err := b.Intents(ctx)
	if err != nil || len(got) != 1 || got[0].Master != "a" || got[0].Instance != "i-0123" || got[0].Driver != "ec2" {
		t.Fatalf("Intents = %+v, %v; want a's start of latent1 as i-0123", got, err)
	}
	if err := in.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Intents(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Intents after Clear = %+v, %v; want none", got, err)
	}
	if err := in.Clear(ctx); err != nil {
		t.Fatalf("second Clear: %v", err)
	}
	if err := in.SetInstance(ctx, "i-4567"); !errors.Is(err, cluster.ErrIntentGone) {
		t.Fatalf("SetInstance after Clear = %v, want ErrIntentGone", err)
	}

	// The record outlives its master, for the leader to find.
	if _, err := a.RecordStart(ctx, "latent2", "libvirt"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if got, err := b.Intents(ctx); err != nil || len(got) != 1 || got[0].Slave != "latent2" || got[0].Master != "a" {
		t.Fatalf("Intents after a closed = %+v, %v; want a's start of latent2", got, err)
	}
}

func TestRecordOfNewerFormatRefused(t *testing.T) {
	srv := clustertest.Start(t)
	ctx := t.Context()
	raw := rawClient(t, srv)
	for k, v := range map[string]string{
		"/test/members/z":   `{"format":2,"body":{"id":"z"}}`,
		"/test/owners/bot1": `{"format":2,"body":{"master":"z"}}`,
		"/test/members/y":   `not json`,
	} {
		if _, err := raw.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	a := join(t, srv, "a", nil)

	got, err := a.Members(ctx)
	var ferr *cluster.FormatError
	if ids(got) != "a" || !errors.As(err, &ferr) || !strings.Contains(err.Error(), `record "/test/members/z" has format 2, newer than this master reads (1)`) ||
		!strings.Contains(err.Error(), `record "/test/members/y" is not a cluster record`) {
		t.Fatalf("Members = %q, %v; want a, and errors for z and y", ids(got), err)
	}
	if err := a.Claim(ctx, "bot1"); !errors.As(err, &ferr) || ferr.Format != 2 {
		t.Fatalf("Claim over a newer record = %v, want a FormatError", err)
	}
	if _, _, err := a.Owner(ctx, "bot1"); !errors.As(err, &ferr) {
		t.Fatalf("Owner of a newer record = %v, want a FormatError", err)
	}
	if _, err := cluster.Join(ctx, cluster.Config{ID: "z", Endpoints: srv.Endpoints, Prefix: "/test/", Logger: quiet}); !errors.As(err, &ferr) {
		t.Fatalf("Join over a newer record = %v, want a FormatError", err)
	}
}

func TestEtcdUnreachableAtStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	start := time.Now()
	_, err = cluster.Join(t.Context(), cluster.Config{ID: "a", Endpoints: []string{addr}, DialTimeout: time.Second, Logger: quiet})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "unreachable at start") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Join = %v, want a clear unreachable error naming %s", err, addr)
	}
	if took > 5*time.Second {
		t.Fatalf("Join took %v to fail, want about DialTimeout (1s)", took)
	}
	t.Logf("Join failed after %v: %v", took.Round(10*time.Millisecond), err)

	for _, cfg := range []cluster.Config{{Endpoints: []string{addr}}, {ID: "a"}, {ID: "a/b", Endpoints: []string{addr}}, {ID: "a", Endpoints: []string{addr}, LeaseTTL: 1500 * time.Millisecond}} {
		if _, err := cluster.Join(t.Context(), cfg); err == nil {
			t.Errorf("Join(%+v) succeeded, want a config error", cfg)
		}
	}
}
