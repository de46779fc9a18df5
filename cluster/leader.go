package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/sync/errgroup"
)

// Stopper stops the latent instance an intent record names, for the leader,
// on behalf of a master that died: by the record's driver name (which the
// application maps to its latent drivers) and instance id. An intent whose
// Instance is empty was recorded by a master that died before its driver
// named the instance: the stopper finds it by the slave's name and the dead
// master's tag (a latent.Lister), or returns nil if nothing of it runs.
// Stopping an instance that is already gone is not an error.
type Stopper interface {
	StopIntent(ctx context.Context, intent IntentInfo) error
}

// StopperFunc is a function that is a Stopper.
type StopperFunc func(ctx context.Context, intent IntentInfo) error

// StopIntent calls f.
func (f StopperFunc) StopIntent(ctx context.Context, intent IntentInfo) error { return f(ctx, intent) }

// Defaults for LeaderConfig's zero values.
const (
	// DefaultStopParallelism is how many instances the leader stops at once.
	DefaultStopParallelism = 8
	// DefaultLostRetention is how long a lost build request stays listed.
	DefaultLostRetention = 24 * time.Hour
)

// LeaderConfig says what the elected leader does.
type LeaderConfig struct {
	// Stopper stops dead masters' latent instances; required.
	Stopper Stopper
	// WhileLeading, if set, runs in its own goroutine from the moment this
	// master is elected until it stops leading (its ctx ends then): the
	// place for cluster-wide chores only one master may do, such as the
	// missing-mail sweep.
	WhileLeading func(ctx context.Context)
	// RetryInterval is how long the leader waits before trying again an
	// instance it could not stop (default: the member's LeaseTTL).
	RetryInterval time.Duration
	// StopParallelism bounds the instances stopped at once (default
	// DefaultStopParallelism).
	StopParallelism int
	// LostRetention is how long a build request lost with its master stays
	// listed by Requests, for people to see what happened (default
	// DefaultLostRetention; whole seconds).
	LostRetention time.Duration
}

// leaderPrefix is where the election's keys live.
func (m *Member) leaderPrefix() string { return m.cfg.Prefix + "leader" }

// Leader returns the id of the master that leads the cluster now; ok is
// false while no master leads (none runs Lead, or the leader died and the
// next one is not elected yet).
func (m *Member) Leader(ctx context.Context) (id string, ok bool, err error) {
	resp, err := m.client.Get(ctx, m.leaderPrefix()+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", false, fmt.Errorf("cluster: reading the leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

// Lead campaigns to lead the cluster (a concurrency.Election under
// Prefix+"leader", on this master's lease) and, once elected, leads until
// ctx ends or this master's session is lost: it stops the latent instances
// of every master whose lease has ended (at election, then whenever a master
// leaves) through cfg.Stopper and clears their intent records, marks the
// build requests such a master had claimed as lost (see
// RequestLost), and runs cfg.WhileLeading. A master that is not elected
// waits its turn: leadership moves when the leader's lease ends. Lead returns
// nil when ctx ends (resigning if it led), ErrSessionLost when this master's
// session ended, or an error if etcd refused the campaign.
//
// An instance is stopped before its record is cleared, and the record is
// cleared only while this master still leads: a leader that dies between the
// two leaves the record, and the next leader stops the instance again
// (Stopper's stop of a gone instance is not an error). Each dead master's
// instance is thus stopped once, and at least once across leader deaths.
func (m *Member) Lead(ctx context.Context, cfg LeaderConfig) error {
	if cfg.Stopper == nil {
		return errors.New("cluster: LeaderConfig.Stopper: must be set")
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = m.cfg.LeaseTTL
	}
	if cfg.StopParallelism <= 0 {
		cfg.StopParallelism = DefaultStopParallelism
	}
	if cfg.LostRetention < time.Second {
		cfg.LostRetention = DefaultLostRetention
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	go func() { // ends with ctx, which Lead cancels on return
		select {
		case <-m.session.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	e := concurrency.NewElection(m.session, m.leaderPrefix())
	if err := e.Campaign(ctx, m.cfg.ID); err != nil {
		if m.live() != nil {
			return ErrSessionLost
		}
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cluster: campaigning to lead: %w", err)
	}
	m.cfg.Logger.Info("cluster: leading", "master", m.cfg.ID)
	l := &leader{m: m, cfg: cfg, key: e.Key(), rev: e.Rev()}
	err := l.run(ctx)
	rctx, rcancel := context.WithTimeout(context.Background(), m.cfg.DialTimeout)
	defer rcancel()
	if m.live() == nil {
		_ = e.Resign(rctx) // best effort: the key goes with the lease anyway
	}
	m.cfg.Logger.Info("cluster: no longer leading", "master", m.cfg.ID)
	if m.live() != nil {
		return ErrSessionLost
	}
	return err
}

// leader is one term of leadership.
type leader struct {
	m   *Member
	cfg LeaderConfig
	key string // our election key
	rev int64  // its create revision: the guard of every write we make as leader
	// lost is the lease lost requests are kept under, granted by the sweep
	// that first needs it.
	lost clientv3.LeaseID
}

func (l *leader) run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if l.cfg.WhileLeading != nil {
		wg.Go(func() { l.cfg.WhileLeading(ctx) })
	}
	events, err := l.m.Watch(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// The watch's first events are the live members; the first sweep
	// follows them, and then each departure brings one.
	var retry <-chan time.Time
	sweep := func() {
		retry = nil
		if !l.sweep(ctx) {
			retry = time.After(l.cfg.RetryInterval)
		}
	}
	sweep()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry:
			sweep()
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("cluster: the leader's watch of members ended")
			}
			if ev.Type == Left {
				sweep()
			}
		}
	}
}

// sweep stops and clears what dead masters left and marks their claimed
// requests lost; it reports whether everything was done.
func (l *leader) sweep(ctx context.Context) bool {
	m := l.m
	l.lost = 0
	resp, err := m.client.Txn(ctx).Then(
		clientv3.OpGet(m.cfg.Prefix+"members/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(m.cfg.Prefix+"intents/", clientv3.WithPrefix()),
		clientv3.OpGet(m.cfg.Prefix+"builds/", clientv3.WithPrefix()),
		clientv3.OpGet(m.cfg.Prefix+"builds-claimed/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		if ctx.Err() == nil {
			m.cfg.Logger.Warn("cluster: leader could not read the cluster; trying again", "err", err, "in", l.cfg.RetryInterval)
		}
		return false
	}
	live := m.memberLeases(resp.Responses[0].GetResponseRange().Kvs)
	done := true
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(l.cfg.StopParallelism)
	var mu sync.Mutex
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var in IntentInfo
		if err := decode(string(kv.Key), kv.Value, &in); err != nil {
			m.cfg.Logger.Error("cluster: leader cannot read an intent record; leaving it", "err", err)
			continue
		}
		if _, ok := live[in.Master]; ok {
			continue
		}
		key, rev := string(kv.Key), kv.ModRevision
		g.Go(func() error {
			if !l.reap(gctx, key, rev, in) {
				mu.Lock()
				done = false
				mu.Unlock()
			}
			return nil
		})
	}
	g.Wait() //nolint:errcheck // reap reports through done
	claimed := make(map[string]bool)
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		claimed[string(kv.Key)[len(m.cfg.Prefix+"builds-claimed/"):]] = true
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		var r BuildRequest
		if err := decode(string(kv.Key), kv.Value, &r); err != nil {
			m.cfg.Logger.Error("cluster: leader cannot read a build request; leaving it", "err", err)
			continue
		}
		if r.State != RequestClaimed || claimed[r.ID] {
			continue
		}
		if !l.markLost(ctx, string(kv.Key), kv.ModRevision, r) {
			done = false
		}
	}
	return done
}

// guard holds while this master still leads.
func (l *leader) guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// reap stops the instance of one dead master's intent, then clears the
// record if it is unchanged, its master still dead and this master still
// leads.
func (l *leader) reap(ctx context.Context, key string, rev int64, in IntentInfo) bool {
	m := l.m
	log := m.cfg.Logger.With("slave", in.Slave, "driver", in.Driver, "instance", in.Instance, "dead_master", in.Master)
	if err := l.cfg.Stopper.StopIntent(ctx, in); err != nil {
		if ctx.Err() == nil {
			log.Error("cluster: leader could not stop a dead master's latent instance; trying again", "err", err, "in", l.cfg.RetryInterval)
		}
		return false
	}
	resp, err := m.client.Txn(ctx).
		If(l.guard(), clientv3.Compare(clientv3.ModRevision(key), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(m.cfg.Prefix+"members/"+in.Master), "=", 0)).
		Then(clientv3.OpDelete(key)).
		Commit()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			log.Warn("cluster: leader stopped a dead master's latent instance but could not clear its record; trying again", "err", err)
		}
		return false
	case !resp.Succeeded:
		log.Info("cluster: leader stopped a dead master's latent instance; its record changed meanwhile, left as it is")
	default:
		log.Info("cluster: leader stopped a dead master's latent instance and cleared its record")
	}
	return true
}
