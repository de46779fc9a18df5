package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// RequestState is where a build request stands:
//
//	queued ──ClaimRequest──▶ claimed ──Claim.Done──▶ (deleted)
//	                            │
//	                            └─ claimer's lease ended ──▶ lost (kept for LostRetention)
type RequestState string

// The states of a build request.
const (
	// RequestQueued: waiting for a master that holds a fitting slave.
	RequestQueued RequestState = "queued"
	// RequestClaimed: a master claimed it and runs it.
	RequestClaimed RequestState = "claimed"
	// RequestLost: the master that claimed it died (its lease ended)
	// before it finished; the build is not run again: Lost says why.
	RequestLost RequestState = "lost"
)

// BuildRequest is a build queued in etcd for whichever master holds one of
// its slaves.
type BuildRequest struct {
	// ID identifies the request (random, unique).
	ID string `json:"id"`
	// Builder names the builder to run.
	Builder string `json:"builder"`
	// Slaves are the slaves the build may run on: any one of them fits.
	Slaves []string `json:"slaves"`
	// Reason is why the build was asked for (shown to people).
	Reason string `json:"reason,omitempty"`
	// Submitter is the id of the master that queued it.
	Submitter string `json:"submitter"`
	// Submitted is when it was queued, by the submitter's clock.
	Submitted time.Time `json:"submitted"`
	// State is where it stands.
	State RequestState `json:"state"`
	// Master and Slave say who claimed it, once claimed.
	Master string `json:"master,omitempty"`
	Slave  string `json:"slave,omitempty"`
	// Lost says what happened to a lost request.
	Lost string `json:"lost,omitempty"`
}

// ErrRequestTaken is returned by ClaimRequest when the request is no longer
// queued: another master claimed it first, or it is gone.
var ErrRequestTaken = errors.New("cluster: build request already claimed or gone")

// ErrNotOwner is returned by ClaimRequest when this master does not hold
// the slave it claims the request for, and by ClaimRequestToStart when
// some master holds it or is starting it.
var ErrNotOwner = errors.New("cluster: the slave is not this master's to run the build on")

// ErrRequestGone is returned by Claim.Done when the request is no longer
// this master's claim: its lease ended meanwhile and the leader marked the
// request lost.
var ErrRequestGone = errors.New("cluster: build request no longer claimed by this master")

// Build requests live under Prefix+"builds/<id>" (no lease: they outlive
// their submitter), their claims under Prefix+"builds-claimed/<id>", under
// the claimer's lease.
func (m *Member) requestKey(id string) string { return m.cfg.Prefix + "builds/" + id }
func (m *Member) claimKey(id string) string   { return m.cfg.Prefix + "builds-claimed/" + id }

// Enqueue queues a build of builder on any of slaves, for the master that
// holds one of them to claim (one etcd write).
func (m *Member) Enqueue(ctx context.Context, builder string, slaves []string, reason string) (BuildRequest, error) {
	if builder == "" {
		return BuildRequest{}, errors.New("cluster: Enqueue: builder: must be set")
	}
	if len(slaves) == 0 {
		return BuildRequest{}, fmt.Errorf("cluster: Enqueue %q: slaves: must name at least one", builder)
	}
	r := BuildRequest{ID: rand.Text(), Builder: builder, Slaves: slaves, Reason: reason,
		Submitter: m.cfg.ID, Submitted: time.Now().UTC(), State: RequestQueued}
	val, err := encode(r)
	if err != nil {
		return BuildRequest{}, err
	}
	if _, err := m.client.Put(ctx, m.requestKey(r.ID), val); err != nil {
		return BuildRequest{}, fmt.Errorf("cluster: queuing a build of %q: %w", builder, err)
	}
	return r, nil
}

// Requests lists the build requests in the order they were queued: queued,
// claimed and lost ones. A record it cannot read is left out and reported in
// the joined error.
func (m *Member) Requests(ctx context.Context) ([]BuildRequest, error) {
	return list[BuildRequest](ctx, m.client, m.cfg.Prefix+"builds/", "build requests", clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
}

// WatchRequests signals on the returned channel whenever a build request is
// queued, claimed, finished or lost, until ctx ends or the member is closed.
// Signals coalesce: after one, list Requests.
func (m *Member) WatchRequests(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	stop := context.AfterFunc(m.ctx, cancel)
	wc := m.client.Watch(wctx, m.cfg.Prefix+"builds/", clientv3.WithPrefix(), clientv3.WithFilterDelete())
	m.wg.Go(func() {
		defer close(ch)
		defer stop()
		defer cancel()
		for resp := range wc {
			if resp.Err() != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	})
	return ch
}

// Claim is this master's claim of a build request: it holds while this
// master's lease lives.
type Claim struct {
	m   *Member
	req BuildRequest
}

// Request is the request as claimed.
func (c *Claim) Request() BuildRequest { return c.req }

// ClaimRequest claims a queued request to run it on slave, which this
// master must hold (own, as Claim made it): one etcd transaction, so that of
// masters racing for a request exactly one wins; the others get
// ErrRequestTaken. It returns ErrNotOwner when this master does not hold
// slave, and ErrSessionLost once its lease ended.
func (m *Member) ClaimRequest(ctx context.Context, id, slave string) (*Claim, error) {
	return m.claimRequest(ctx, id, slave, clientv3.Compare(clientv3.LeaseValue(m.ownerKey(slave)), "=", m.session.Lease()))
}

// ClaimRequestToStart is ClaimRequest for a latent slave that is neither
// attached anywhere nor being started: this master claims the request to
// start the slave itself. It returns ErrNotOwner when a master holds the
// slave or has an intent record for it.
func (m *Member) ClaimRequestToStart(ctx context.Context, id, slave string) (*Claim, error) {
	return m.claimRequest(ctx, id, slave, clientv3.Compare(clientv3.CreateRevision(m.ownerKey(slave)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(m.intentKey(slave)), "=", 0))
}

func (m *Member) claimRequest(ctx context.Context, id, slave string, fits ...clientv3.Cmp) (*Claim, error) {
	if err := m.live(); err != nil {
		return nil, fmt.Errorf("cluster: claiming build request %s: %w", id, err)
	}
	key := m.requestKey(id)
	resp, err := m.client.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("cluster: claiming build request %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("cluster: claiming build request %s: %w", id, ErrRequestTaken)
	}
	kv := resp.Kvs[0]
	var r BuildRequest
	if err := decode(key, kv.Value, &r); err != nil {
		return nil, err
	}
	if r.State != RequestQueued {
		return nil, fmt.Errorf("cluster: claiming build request %s: %w", id, ErrRequestTaken)
	}
	r.State, r.Master, r.Slave = RequestClaimed, m.cfg.ID, slave
	val, err := encode(r)
	if err != nil {
		return nil, err
	}
	claim, err := encode(OwnerInfo{Slave: slave, Master: m.cfg.ID, Addrs: m.cfg.Addrs})
	if err != nil {
		return nil, err
	}
	unchanged := clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
	tx, err := m.client.Txn(ctx).
		If(append([]clientv3.Cmp{unchanged}, fits...)...).
		Then(clientv3.OpPut(key, val), clientv3.OpPut(m.claimKey(id), claim, clientv3.WithLease(m.session.Lease()))).
		Else(clientv3.OpTxn([]clientv3.Cmp{unchanged}, nil, nil)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster: claiming build request %s: %w", id, err)
	}
	if !tx.Succeeded {
		if !tx.Responses[0].GetResponseTxn().Succeeded {
			return nil, fmt.Errorf("cluster: claiming build request %s: %w", id, ErrRequestTaken)
		}
		return nil, fmt.Errorf("cluster: claiming build request %s for slave %q: %w", id, slave, ErrNotOwner)
	}
	return &Claim{m: m, req: r}, nil
}

// Done removes the finished request (one etcd write). It returns
// ErrRequestGone when this master's claim ended meanwhile (its lease
// expired and the leader marked the request lost).
func (c *Claim) Done(ctx context.Context) error {
	m := c.m
	resp, err := m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(m.claimKey(c.req.ID)), "=", m.session.Lease())).
		Then(clientv3.OpDelete(m.requestKey(c.req.ID)), clientv3.OpDelete(m.claimKey(c.req.ID))).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: finishing build request %s: %w", c.req.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("cluster: finishing build request %s: %w", c.req.ID, ErrRequestGone)
	}
	return nil
}

// Unclaim puts the request back in the queue, for a master that claimed
// it and then found it cannot run it after all (one etcd write). It
// returns ErrRequestGone when this master's claim ended meanwhile.
func (c *Claim) Unclaim(ctx context.Context) error {
	m := c.m
	r := c.req
	r.State, r.Master, r.Slave = RequestQueued, "", ""
	val, err := encode(r)
	if err != nil {
		return err
	}
	resp, err := m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(m.claimKey(r.ID)), "=", m.session.Lease())).
		Then(clientv3.OpPut(m.requestKey(r.ID), val), clientv3.OpDelete(m.claimKey(r.ID))).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: queuing build request %s again: %w", r.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("cluster: queuing build request %s again: %w", r.ID, ErrRequestGone)
	}
	return nil
}

// markLost marks a claimed request whose claimer's lease ended as lost, if
// it is unchanged and this master still leads; the record stays for
// LostRetention.
func (l *leader) markLost(ctx context.Context, key string, rev int64, r BuildRequest) bool {
	m := l.m
	r.State = RequestLost
	r.Lost = fmt.Sprintf("master %q, which ran it on slave %q, died (its etcd lease ended) before the build finished; it is not run again: force it again if you still want it", r.Master, r.Slave)
	val, err := encode(r)
	if err != nil {
		return false
	}
	if l.lost == 0 {
		g, err := m.client.Grant(ctx, int64(l.cfg.LostRetention/time.Second))
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Logger.Warn("cluster: leader could not mark a build request lost; trying again", "id", r.ID, "err", err)
			}
			return false
		}
		l.lost = g.ID
	}
	resp, err := m.client.Txn(ctx).
		If(l.guard(), clientv3.Compare(clientv3.ModRevision(key), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(m.claimKey(r.ID)), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(l.lost))).
		Commit()
	if err != nil {
		if ctx.Err() == nil {
			m.cfg.Logger.Warn("cluster: leader could not mark a build request lost; trying again", "id", r.ID, "err", err)
		}
		return false
	}
	if resp.Succeeded {
		m.cfg.Logger.Warn("cluster: build request lost with its master", "id", r.ID, "builder", r.Builder, "dead_master", r.Master, "slave", r.Slave)
	}
	return true
}
