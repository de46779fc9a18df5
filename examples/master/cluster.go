package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/internal/config"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// etcdTimeout bounds each etcd call the master makes for a page, a forced
// build or a claim.
const etcdTimeout = 5 * time.Second

// clustered is the master's part in a cluster of masters sharing one
// fleet through etcd ([cluster] in the configuration): its membership, the
// leader it runs for, and the dispatcher that claims the builds queued in
// etcd for the slaves it holds.
type clustered struct {
	member     *cluster.Member
	stopLead   context.CancelFunc // ends the leader's campaign or term
	stopClaims context.CancelFunc // ends the dispatcher
	wg         sync.WaitGroup     // the leader, the dispatcher, the claimed builds
	queueDown  bool               // the dispatcher's last read of the queue failed (logged once per change)
	leading    atomic.Bool        // this master leads: it runs the periodic schedules
	lost       chan struct{}      // closed when the lease ended and etcd answers again: the master exits
}

// joinCluster joins the cluster of cfg.Cluster, publishing this master's
// protocol addresses; nil without [cluster]. etcd unreachable at start, or
// a live master with the same id, is an error: the master does not start.
func (m *master) joinCluster() error {
	cfg := m.cfg.Cluster
	if cfg == nil {
		return nil
	}
	ccfg := *cfg
	ccfg.Addrs = map[string]string{"pb": m.pbAddr, "msgpack": m.protoAddr, "http": m.webAddr}
	ccfg.Logger = m.log
	member, err := cluster.Join(context.Background(), ccfg) // bounded by its DialTimeout
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	m.cluster = &clustered{member: member}
	m.clusterLifecycle(m.cfg)
	m.progress("joined the cluster as %s (etcd %v, lease %v)", ccfg.ID, ccfg.Endpoints, ccfg.LeaseTTL)
	return nil
}

// clusterLifecycle gives cfg's latent lifecycle settings this master's
// member as their Starter: every latent start is recorded in etcd before
// the driver's Start (so a latent slave starts on one master at most, and
// the leader can stop the instance of a master that died).
func (m *master) clusterLifecycle(cfg *config.Config) {
	if m.cluster != nil {
		cfg.Lifecycle.Starter = m.cluster.member.Latent()
	}
}

// runCluster starts the leader campaign (the leader stops dead masters'
// latent instances and sends their slaves' missing notices) and the
// dispatcher of queued builds, once the manager, the lifecycle and the
// runner exist.
func (m *master) runCluster() {
	c := m.cluster
	if c == nil {
		return
	}
	leadCtx, stopLead := context.WithCancel(context.Background())
	claimCtx, stopClaims := context.WithCancel(context.Background())
	c.stopLead, c.stopClaims = stopLead, stopClaims
	c.wg.Go(func() {
		err := c.member.Lead(leadCtx, cluster.LeaderConfig{Stopper: cluster.StopperFunc(m.stopIntent),
			WhileLeading: func(ctx context.Context) {
				c.leading.Store(true)
				defer c.leading.Store(false)
				// the missing notices of masters that died, once each
				c.member.SweepMissing(ctx, m.latentCfg.Notifier.SlaveMissing) //nolint:errcheck // ctx's error
			}})
		if err != nil {
			m.log.Error("cluster: no longer campaigning to lead", "err", err)
		}
	})
	c.wg.Go(func() { m.dispatch(claimCtx) })
	c.lost = make(chan struct{})
	c.wg.Go(func() { m.watchSession(leadCtx) })
}

// watchSession logs once when this master's lease ends while it runs (etcd
// unreachable, or this master cut from it, for longer than lease_ttl:
// every name it held is free in the cluster, and its slaves may attach
// elsewhere). The master keeps serving the slaves it holds and refuses new
// names (the slave manager logs that once). Once etcd answers again, it
// closes c.lost: the master exits with status 1, for its supervisor to
// restart it, and the restart joins with a new lease and takes its slaves
// back as they reconnect. Rejoining in place would leave a window where
// this master and another both hold a slave's name.
func (m *master) watchSession(ctx context.Context) {
	c := m.cluster
	select {
	case <-ctx.Done():
		return
	case <-c.member.Done():
	}
	m.log.Error("cluster: this master's etcd lease ended (etcd unreachable for longer than lease_ttl): serving only the slaves it holds; exiting once etcd answers again, for a restart to rejoin")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.member.Members(rctx)
		cancel()
		if err == nil {
			close(c.lost)
			return
		}
	}
}

// clusterLost is closed when this master lost its lease and etcd answers
// again: the master must exit (see watchSession); nil without a cluster.
func (m *master) clusterLost() <-chan struct{} {
	if m.cluster == nil {
		return nil
	}
	return m.cluster.lost
}

// clusterSchedulers has, in a cluster, the leader alone run the periodic
// schedules, their builds queued for the master that holds a fitting slave
// (the at_start builds stay each master's own, at its start).
func (m *master) clusterSchedulers() {
	if c := m.cluster; c != nil {
		m.scheds.Periodic, m.scheds.Active = m.force, c.leading.Load
	}
}

// stopClaiming ends the dispatcher: first in shutdown, so that this master
// claims no build it would not run.
func (m *master) stopClaiming() {
	if c := m.cluster; c != nil && c.stopClaims != nil {
		c.stopClaims()
	}
}

// leaveCluster stops the leader and the dispatcher and leaves the cluster
// (its slave names free at once); last in shutdown, after the latent
// instances stopped and cleared their records.
func (m *master) leaveCluster() {
	c := m.cluster
	if c == nil {
		return
	}
	if c.stopLead != nil {
		c.stopClaims()
		c.stopLead()
	}
	c.wg.Wait()
	if err := c.member.Close(); err != nil {
		m.log.Warn("cluster: leaving", "err", err)
	}
}

// stopIntent stops, for the leader, the latent instance a dead master
// left: through this master's driver of the same latent slave (the
// masters of a cluster configure the same ones), by the instance id in the
// record, or, when the dead master died before its driver named the
// instance, by listing what carries the dead master's tag.
func (m *master) stopIntent(ctx context.Context, in cluster.IntentInfo) error {
	m.mu.Lock()
	d := m.latents[in.Slave]
	m.mu.Unlock()
	if d == nil {
		return fmt.Errorf("latent slave %q of dead master %q (driver %q, instance %q) is not configured here: cannot stop it",
			in.Slave, in.Master, in.Driver, in.Instance)
	}
	if in.Instance != "" {
		return d.Stop(ctx, latent.Instance{ID: in.Instance, Slave: in.Slave, MasterID: in.Master})
	}
	l, ok := d.(latent.Lister)
	if !ok {
		m.log.Warn("cluster: a dead master's latent start has no instance id and its driver cannot list instances: left to that driver's own cleanup",
			"slave", in.Slave, "dead_master", in.Master, "driver", in.Driver)
		return nil
	}
	insts, err := l.List(ctx, in.Master)
	if err != nil {
		return err
	}
	var errs []error
	for _, inst := range insts {
		if inst.Slave == in.Slave {
			errs = append(errs, d.Stop(ctx, inst))
		}
	}
	return errors.Join(errs...)
}

// force forces a build from the web: on this master alone, or in a cluster
// queued in etcd for whichever master holds a fitting slave.
func (m *master) force(builder, reason string) (any, error) {
	if m.cluster == nil {
		return m.runner.ForceID(builder, reason)
	}
	slaves, err := m.runner.Check(builder, reason)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	reqs, err := m.cluster.member.Requests(ctx)
	if err != nil {
		return nil, fmt.Errorf("queuing the build in etcd: %w", err)
	}
	queued := 0
	for _, r := range reqs {
		if r.Builder == builder && r.State == cluster.RequestQueued {
			queued++
		}
	}
	if lim := m.config().BuildLimits.MaxQueuedBuilds; queued >= lim {
		return nil, fmt.Errorf("%w: %d wait in the cluster already (max_queued_builds)", builds.ErrQueueFull, queued)
	}
	r, err := m.cluster.member.Enqueue(ctx, builder, slaves, reason)
	if err != nil {
		return nil, fmt.Errorf("queuing the build in etcd: %w", err)
	}
	m.progress("%s: queued in the cluster as %s, for the master that holds one of %v", builder, r.ID, slaves)
	return r.ID, nil
}

// dispatch claims the builds queued in etcd that this master can run: it
// reads the queue when it changes, and when a slave attaches here or a
// build ends only while the last read left a request waiting, so that
// slave events cost no etcd request while the queue is empty.
func (m *master) dispatch(ctx context.Context) {
	changed := m.cluster.member.WatchRequests(ctx)
	events, cancel := m.mgr.Subscribe()
	defer cancel()
	waiting := m.claimRequests(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changed:
			if !ok {
				return
			}
		case ev, ok := <-events:
			if !ok {
				return
			}
			if !waiting || (ev.Kind != slave.Attached && ev.Kind != slave.BuildFinished && ev.Kind != slave.Unpaused) {
				continue
			}
		}
		waiting = m.claimRequests(ctx)
	}
}

// claimRequests claims each queued request that has a slave attached here
// (or, failing that, an idle latent slave configured here that no master
// holds or starts) and runs it on that slave. It reports whether a request
// this master could run is left waiting (or the queue could not be read).
func (m *master) claimRequests(ctx context.Context) (waiting bool) {
	c := m.cluster
	select {
	case <-c.member.Done():
		return false // this master's session ended (it said so): it can claim nothing
	default:
	}
	rctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	reqs, err := c.member.Requests(rctx)
	if down := err != nil && ctx.Err() == nil; down != c.queueDown {
		c.queueDown = down // only the dispatcher's goroutine reads and writes it
		if down {
			m.log.Warn("cluster: cannot read the queued builds; trying again at the next queue or slave event", "err", err)
		} else {
			m.log.Info("cluster: reading the queued builds again")
		}
	}
	waiting = err != nil
	attached := map[string]bool{}
	for _, st := range m.mgr.States() {
		attached[st.Name] = st.Attached && !st.Paused && !st.ShuttingDown
	}
	known := m.runner.Builders()
	for _, r := range reqs {
		if r.State != cluster.RequestQueued || !slices.Contains(known, r.Builder) {
			continue
		}
		claim := m.claimOne(rctx, r, attached)
		if claim == nil {
			waiting = true // (or another master just took it: the next read says)
			continue
		}
		cr := claim.Request()
		h, err := m.runner.ForceOn(cr.Builder, cr.Reason, []string{cr.Slave})
		if err != nil {
			m.log.Warn("cluster: a claimed build could not start here; queued again", "id", cr.ID, "builder", cr.Builder, "err", err)
			if err := claim.Unclaim(rctx); err != nil {
				m.log.Warn("cluster: queuing a claimed build again", "id", cr.ID, "err", err)
			}
			waiting = true
			continue
		}
		m.progress("%s #%d: claimed %s, queued on %s, for %s", cr.Builder, h.ID, cr.ID, cr.Submitter, cr.Slave)
		c.wg.Go(func() { // the runner ends every build it started, at shutdown too
			<-h.Done()
			m.finishClaim(claim)
		})
	}
	return waiting
}

// claimOne claims r for a slave attached here, else for a latent slave to
// start here; nil if this master cannot run it (or lost the race).
func (m *master) claimOne(ctx context.Context, r cluster.BuildRequest, attached map[string]bool) *cluster.Claim {
	try := func(claim func(context.Context, string, string) (*cluster.Claim, error), slave string) (*cluster.Claim, bool) {
		cl, err := claim(ctx, r.ID, slave)
		switch {
		case err == nil:
			return cl, true
		case errors.Is(err, cluster.ErrRequestTaken):
			return nil, true
		case errors.Is(err, cluster.ErrNotOwner):
			return nil, false
		}
		m.log.Warn("cluster: claiming a queued build", "id", r.ID, "slave", slave, "err", err)
		return nil, true
	}
	for _, s := range r.Slaves {
		if attached[s] {
			if cl, done := try(m.cluster.member.ClaimRequest, s); done {
				return cl
			}
		}
	}
	for _, s := range r.Slaves {
		m.mu.Lock()
		_, isLatent := m.latents[s]
		m.mu.Unlock()
		if isLatent {
			if cl, done := try(m.cluster.member.ClaimRequestToStart, s); done {
				return cl
			}
		}
	}
	return nil
}

// finishClaim removes a finished request from the queue.
func (m *master) finishClaim(cl *cluster.Claim) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	if err := cl.Done(ctx); err != nil {
		m.log.Warn("cluster: finishing a queued build", "id", cl.Request().ID, "err", err)
	}
}

// clusterStatus is the Cluster section of the status page and the JSON.
func (m *master) clusterStatus() *status.Cluster {
	mem := m.cluster.member
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	out := &status.Cluster{Master: mem.ID(), Masters: []status.ClusterMaster{}, Owners: []status.SlaveOwner{}, Requests: []status.ClusterRequest{}}
	leader, _, err1 := mem.Leader(ctx)
	out.Leader = leader
	members, err2 := mem.Members(ctx)
	for _, mi := range members {
		out.Masters = append(out.Masters, status.ClusterMaster{ID: mi.ID, Addrs: mi.Addrs, Started: mi.Started,
			Leader: mi.ID == leader, Self: mi.ID == mem.ID()})
	}
	owners, err3 := mem.Owners(ctx)
	for _, o := range owners {
		out.Owners = append(out.Owners, status.SlaveOwner{Slave: o.Slave, Master: o.Master})
	}
	reqs, err4 := mem.Requests(ctx)
	for _, r := range reqs {
		out.Requests = append(out.Requests, status.ClusterRequest{ID: r.ID, Builder: r.Builder, State: string(r.State), Reason: r.Reason,
			Submitter: r.Submitter, Submitted: r.Submitted, Master: r.Master, Slave: r.Slave, Lost: r.Lost})
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		out.Error = err.Error()
	}
	return out
}

// clusterView is status.Config.Cluster: nil for a master alone.
func (m *master) clusterView() func() *status.Cluster {
	if m.cluster == nil {
		return nil
	}
	return m.clusterStatus
}
