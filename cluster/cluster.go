// Package cluster lets several masters share one fleet of slaves through etcd:
// membership on a lease, one owner per slave name, and intent records for
// latent starts.
//
// It sits beside the slave manager and the latent lifecycle, not inside them:
// they consult it through the small interfaces they define: a *Member is the
// manager's slave.Gate (claim at attach, the duplicate rule across masters,
// release and the missing notice at detach), and [Member.Latent] is the
// lifecycle's latent.Starter (an intent before a driver's Start). One master
// with no cluster behaves as before.
//
// Layout under the cluster prefix (default "/buildslave/"), every value a
// versioned record (see [Format]):
//
//	members/<master id>  MemberInfo, under the master's lease
//	owners/<slave name>  OwnerInfo, under the owning master's lease
//	intents/<slave name> IntentInfo, under no lease: it outlives its master
//	                     so that the elected leader can stop its instance
//	requests/ping/<slave name>
//	                     PingInfo: a master asking the owner to ping its
//	                     connection, the owner's answer, or a takeover
//	                     notice; under the asking master's lease
//	missing/<slave name> MissingInfo, under no lease: the missing notice a
//	                     lost slave is owed, then that it was sent; deleted
//	                     by a Claim anywhere
//	missing-due/<slave>  empty, under a lease of its own that etcd ends when
//	                     the notice is due (missing_timeout after Release)
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/buildslave/buildslave/slave"
)

// Defaults for Config's zero values.
const (
	DefaultPrefix      = "/buildslave/"
	DefaultLeaseTTL    = 10 * time.Second
	DefaultDialTimeout = 5 * time.Second
)

// Config configures a Member. The zero value of each field but ID and
// Endpoints (or Client) means its default.
type Config struct {
	// ID is this master's id, unique in the cluster; required. A second
	// master joining with an id that is live is refused.
	ID string
	// Addrs are this master's protocol addresses by protocol name, published
	// to the other masters and to Owner.
	Addrs map[string]string
	// Endpoints are the etcd client URLs or host:port pairs.
	Endpoints []string
	// Client, if set, is used instead of dialling Endpoints; Close leaves it
	// open.
	Client *clientv3.Client
	// Prefix is the key prefix every record lives under (default
	// DefaultPrefix); masters sharing a prefix form one cluster.
	Prefix string
	// LeaseTTL is how long after its last keepalive a master is declared dead
	// and its slave names freed (default DefaultLeaseTTL; whole seconds, at
	// least 1 s; etcd may round it up to its own minimum).
	LeaseTTL time.Duration
	// DialTimeout bounds Join's first contact with etcd (default
	// DefaultDialTimeout): etcd unreachable at start is an error after it.
	DialTimeout time.Duration
	// Logger receives one line per change of the session's state (default
	// slog.Default()).
	Logger *slog.Logger
	// PingTimeout is how long the owner of a slave name may take to ping
	// its connection when this master's Claim asks it to (default
	// slave.DefaultDuplicatePingTimeout); Claim waits half as long again
	// for the answer, then takes the name over.
	PingTimeout time.Duration
}

func (c *Config) validate() error {
	if c.ID == "" {
		return errors.New("cluster: ID: must be set")
	}
	if strings.ContainsAny(c.ID, "/") {
		return fmt.Errorf("cluster: ID %q: must not contain '/'", c.ID)
	}
	if c.Client == nil && len(c.Endpoints) == 0 {
		return errors.New("cluster: Endpoints: must name at least one etcd endpoint (or set Client)")
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseTTL < time.Second || c.LeaseTTL%time.Second != 0 {
		return fmt.Errorf("cluster: LeaseTTL %v: must be a whole number of seconds, at least 1s", c.LeaseTTL)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("cluster: DialTimeout %v: must not be negative", c.DialTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = slave.DefaultDuplicatePingTimeout
	}
	if c.PingTimeout < 0 {
		return fmt.Errorf("cluster: PingTimeout %v: must not be negative", c.PingTimeout)
	}
	return nil
}

// ErrSessionLost is returned by writes after this master's lease has ended
// (etcd unreachable for longer than LeaseTTL, or Close): it can no longer
// hold names and must not record starts.
var ErrSessionLost = errors.New("cluster: this master's etcd session is lost")

// DuplicateIDError is returned by Join when a live master already has the id.
type DuplicateIDError struct {
	ID       string
	Existing MemberInfo
}

func (e *DuplicateIDError) Error() string {
	return fmt.Sprintf("cluster: master id %q is already live in the cluster (joined %s, addresses %v): each master needs its own id",
		e.ID, e.Existing.Started.Format(time.RFC3339), e.Existing.Addrs)
}

// Member is this master's membership in the cluster. Its methods are safe for
// concurrent use.
type Member struct {
	cfg      Config
	client   *clientv3.Client
	ownsCli  bool
	session  *concurrency.Session
	info     MemberInfo
	key      string
	ctx      context.Context // ends at Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool
	closeErr error

	// missing holds each missing notice this master recorded at Release
	// and has not sent yet, by slave name.
	missingMu sync.Mutex
	missing   map[string]pendingMissing
	// ownersSeen lists the owned slave names as read at ownersAt, for
	// SendMissing.
	ownersMu   sync.Mutex
	ownersSeen map[string]bool
	ownersAt   time.Time
}

// Join dials etcd, opens this master's session (a lease of cfg.LeaseTTL kept
// alive in the background) and registers it under the cluster prefix. It
// fails within cfg.DialTimeout when etcd cannot be reached, and with a
// *DuplicateIDError when a live master has the same id; nothing is left
// behind on failure.
func Join(ctx context.Context, cfg Config) (*Member, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Member{cfg: cfg, client: cfg.Client}
	if m.client == nil {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   cfg.Endpoints,
			DialTimeout: cfg.DialTimeout,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return nil, fmt.Errorf("cluster: etcd client for %v: %w", cfg.Endpoints, err)
		}
		m.client, m.ownsCli = cli, true
	}
	if err := m.start(ctx); err != nil {
		if m.ownsCli {
			m.client.Close()
		}
		return nil, err
	}
	return m, nil
}

func (m *Member) start(ctx context.Context) error {
	cfg := &m.cfg
	// The lease is granted under the dial timeout: an unreachable etcd is an
	// error now, not a hang.
	gctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	lease, err := m.client.Grant(gctx, int64(cfg.LeaseTTL/time.Second))
	if err != nil {
		return fmt.Errorf("cluster: etcd at %v unreachable at start (gave up after %v): %w", m.endpoints(), cfg.DialTimeout, err)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	s, err := concurrency.NewSession(m.client, concurrency.WithLease(lease.ID),
		concurrency.WithTTL(int(cfg.LeaseTTL/time.Second)), concurrency.WithContext(m.ctx))
	if err != nil {
		m.cancel()
		m.revoke(lease.ID)
		return fmt.Errorf("cluster: etcd session: %w", err)
	}
	m.session = s
	m.info = MemberInfo{ID: cfg.ID, Addrs: cfg.Addrs, Started: time.Now().UTC()}
	m.key = cfg.Prefix + "members/" + cfg.ID
	val, err := encode(m.info)
	if err != nil {
		m.abort()
		return err
	}
	resp, err := m.client.Txn(gctx).
		If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", 0)).
		Then(clientv3.OpPut(m.key, val, clientv3.WithLease(lease.ID))).
		Else(clientv3.OpGet(m.key)).
		Commit()
	if err != nil {
		m.abort()
		return fmt.Errorf("cluster: registering master %q: %w", cfg.ID, err)
	}
	if !resp.Succeeded {
		m.abort()
		var existing MemberInfo
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) > 0 {
			if err := decode(m.key, kvs[0].Value, &existing); err != nil {
				return fmt.Errorf("cluster: master id %q is already registered, by a record this master cannot read: %w", cfg.ID, err)
			}
		}
		return &DuplicateIDError{ID: cfg.ID, Existing: existing}
	}
	cfg.Logger.Info("cluster: joined", "master", cfg.ID, "prefix", cfg.Prefix, "lease_ttl", cfg.LeaseTTL)
	m.wg.Go(func() {
		select {
		case <-s.Done():
			if m.ctx.Err() == nil {
				cfg.Logger.Error("cluster: etcd session lost: this master no longer holds its slave names", "master", cfg.ID)
			}
		case <-m.ctx.Done():
		}
	})
	return nil
}

func (m *Member) endpoints() []string {
	if len(m.cfg.Endpoints) > 0 {
		return m.cfg.Endpoints
	}
	return m.client.Endpoints()
}

// abort undoes a half-done start.
func (m *Member) abort() {
	m.session.Orphan()
	m.cancel()
	m.revoke(m.session.Lease())
}

func (m *Member) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.DialTimeout)
	defer cancel()
	m.client.Revoke(ctx, id) //nolint:errcheck // best effort: the lease ends at its TTL anyway
}

// live returns ErrSessionLost, without asking etcd, once this master's
// session has ended (Close, or its lease expired as far as its keepalive
// knows).
func (m *Member) live() error {
	if m.ctx.Err() != nil {
		return ErrSessionLost
	}
	select {
	case <-m.session.Done():
		return ErrSessionLost
	default:
		return nil
	}
}

// ID is this master's id.
func (m *Member) ID() string { return m.cfg.ID }

// Info is this master's record.
func (m *Member) Info() MemberInfo { return m.info }

// Done is closed when this master's session ends: at Close, or when etcd
// declared its lease expired. Its names are then free for other masters.
func (m *Member) Done() <-chan struct{} { return m.session.Done() }

// Close ends the membership: it revokes the lease, unless it has ended
// already (freeing every name this master holds at once, rather than at
// the lease's end), stops the
// goroutines it started and closes the etcd client it dialled. Intent records
// stay: they outlive their master by design.
func (m *Member) Close() error {
	m.closeMu.Lock()
	defer m.closeMu.Unlock()
	if m.closed {
		return m.closeErr
	}
	m.closed = true
	var err error
	if m.live() == nil { // else the lease has ended already
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.DialTimeout)
		defer cancel()
		if _, err = m.client.Revoke(ctx, m.session.Lease()); err != nil {
			err = fmt.Errorf("cluster: revoking master %q's lease (it ends at its TTL): %w", m.cfg.ID, err)
		}
	}
	m.session.Orphan()
	m.cancel()
	m.wg.Wait()
	if m.ownsCli {
		err = errors.Join(err, m.client.Close())
	}
	m.closeErr = err
	return err
}

// memberLeases maps the id of each master in a listing of members/ (keys
// only is enough) to the lease its record is under.
func (m *Member) memberLeases(kvs []*mvccpb.KeyValue) map[string]int64 {
	live := make(map[string]int64, len(kvs))
	for _, kv := range kvs {
		live[strings.TrimPrefix(string(kv.Key), m.cfg.Prefix+"members/")] = kv.Lease
	}
	return live
}

// Members lists the live masters, this one included, sorted by id. A record
// it cannot read is left out and reported in the joined error, next to the
// members it could read.
func (m *Member) Members(ctx context.Context) ([]MemberInfo, error) {
	return list[MemberInfo](ctx, m.client, m.cfg.Prefix+"members/", "members")
}

// EventType says what happened to a member.
type EventType int

const (
	// Joined: a master registered.
	Joined EventType = iota + 1
	// Left: a master's record went away: it closed, or its lease expired
	// (it died, or lost etcd for longer than its TTL).
	Left
)

func (t EventType) String() string {
	switch t {
	case Joined:
		return "joined"
	case Left:
		return "left"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// MemberEvent is one change of the membership; Err is set on the last event
// of a watch that failed.
type MemberEvent struct {
	Type   EventType
	Member MemberInfo
	Err    error
}

// Watch reports the live masters, then their changes, until ctx ends or the
// member is closed; then the channel is closed. Its first events are a Joined
// for every master live when Watch returns (this one included), so that
// nothing falls between a listing and the watch; a member left by a lease
// that expired is reported as Left. A record it cannot read is reported as an
// event with Err set, and the watch goes on; a watch that fails ends with an
// event with Err set. Watch fails only if etcd cannot be read now.
func (m *Member) Watch(ctx context.Context) (<-chan MemberEvent, error) {
	prefix := m.cfg.Prefix + "members/"
	resp, err := m.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("cluster: watching members: %w", err)
	}
	initial := make([]MemberEvent, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ev := MemberEvent{Type: Joined}
		if err := decode(string(kv.Key), kv.Value, &ev.Member); err != nil {
			ev.Err = err
			ev.Member.ID = strings.TrimPrefix(string(kv.Key), prefix)
		}
		initial = append(initial, ev)
	}
	ch := make(chan MemberEvent, 16)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	stop := context.AfterFunc(m.ctx, cancel)
	wc := m.client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(resp.Header.Revision+1))
	m.wg.Go(func() {
		defer close(ch)
		defer stop()
		defer cancel()
		send := func(ev MemberEvent) bool {
			select {
			case ch <- ev:
				return true
			case <-wctx.Done():
				return false
			}
		}
		for _, ev := range initial {
			if !send(ev) {
				return
			}
		}
		for resp := range wc {
			if err := resp.Err(); err != nil {
				if wctx.Err() == nil {
					send(MemberEvent{Err: fmt.Errorf("cluster: watching members: %w", err)})
				}
				return
			}
			for _, ev := range resp.Events {
				var out MemberEvent
				kv := ev.Kv
				switch {
				case ev.Type == clientv3.EventTypePut && ev.IsCreate():
					out.Type = Joined
				case ev.Type == clientv3.EventTypeDelete:
					out.Type = Left
					if ev.PrevKv == nil {
						out.Member.ID = strings.TrimPrefix(string(kv.Key), prefix)
						if !send(out) {
							return
						}
						continue
					}
					kv = ev.PrevKv
				default:
					continue
				}
				if err := decode(string(kv.Key), kv.Value, &out.Member); err != nil {
					out.Err = err
					out.Member.ID = strings.TrimPrefix(string(kv.Key), prefix)
				}
				if !send(out) {
					return
				}
			}
		}
	})
	return ch, nil
}
