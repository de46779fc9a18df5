package cluster

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/slave"
)

// The kinds of PingInfo.
const (
	// PingAsk: From asks the owner of Slave to ping its connection.
	PingAsk = "ask"
	// PingAlive: the owner From pinged its connection and it answered.
	PingAlive = "alive"
	// PingTaken: From took Slave over from Owner, which did not answer in
	// time; Owner drops its connection.
	PingTaken = "taken"
)

// PingInfo is the duplicate rule across masters, as a record under
// requests/ping/<slave>: a question, its answer, or a takeover notice.
type PingInfo struct {
	Kind  string `json:"kind"`
	Slave string `json:"slave"`
	// From is the master that asks, answers or took the name.
	From string `json:"from"`
	// Owner is, for PingTaken, the master that lost the name.
	Owner string `json:"owner,omitempty"`
	// Timeout is, for PingAsk, how long the owner may ping.
	Timeout time.Duration `json:"timeout,omitempty"`
}

func (m *Member) askKey(name string) string { return m.cfg.Prefix + "requests/ping/" + name }

// ask waits for the owner's answer to the question Claim asked at
// revision rev, and takes the name when the owner let it go or did not
// answer in time.
func (m *Member) ask(ctx context.Context, name string, owner OwnerInfo, ownerRev, rev int64) error {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), m.cfg.PingTimeout+m.cfg.PingTimeout/2)
	defer cancel()
	key := m.ownerKey(name)
	owners := m.client.Watch(wctx, key, clientv3.WithRev(rev+1))
	answers := m.client.Watch(wctx, m.askKey(name), clientv3.WithRev(rev+1))
	for {
		var wr clientv3.WatchResponse
		ok := true
		select {
		case wr, ok = <-owners:
			if !ok {
				owners = nil
			}
		case wr, ok = <-answers:
			if !ok {
				answers = nil
			}
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("cluster: claiming slave %q: %w", name, context.Cause(ctx))
			}
			return m.takeOver(ctx, name, owner, ownerRev)
		}
		if err := wr.Err(); err != nil && ok && wctx.Err() == nil {
			return fmt.Errorf("cluster: claiming slave %q: waiting for master %q to answer: %w", name, owner.Master, err)
		}
		for _, ev := range wr.Events {
			kv := ev.Kv
			switch {
			case string(kv.Key) == key && ev.Type == clientv3.EventTypeDelete:
				return m.claimFree(ctx, name) // released, or its master died
			case string(kv.Key) == key:
				return m.owned(key, name, []*mvccpb.KeyValue{kv}) // another master took it
			case ev.Type == clientv3.EventTypePut:
				var p PingInfo
				if decode(string(kv.Key), kv.Value, &p) == nil && p.Kind == PingAlive && p.From == owner.Master {
					return &OwnedError{Name: name, Owner: owner}
				}
			}
		}
	}
}

// takeOver makes the name this master's if its owner record is still the
// one Claim found, at revision ownerRev, and tells that owner so.
func (m *Member) takeOver(ctx context.Context, name string, owner OwnerInfo, ownerRev int64) error {
	key := m.ownerKey(name)
	_, take, err := m.claimOps(name)
	if err != nil {
		return err
	}
	notice, err := encode(PingInfo{Kind: PingTaken, Slave: name, From: m.cfg.ID, Owner: owner.Master})
	if err != nil {
		return err
	}
	take = append(take, clientv3.OpPut(m.askKey(name), notice, clientv3.WithLease(m.session.Lease())))
	resp, err := m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", ownerRev)).
		Then(take...).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return m.claimErr(name, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return m.claimFree(ctx, name)
		}
		return m.owned(key, name, kvs)
	}
	m.cfg.Logger.Warn("cluster: took a slave name over from a master that did not answer in time",
		"slave", name, "from_master", owner.Master, "waited", m.cfg.PingTimeout+m.cfg.PingTimeout/2)
	return nil
}

// Hold has this master answer the other masters' questions about the slave
// names it holds, through h (the slave manager), until Close: it pings a
// connection when asked and answers if it did, and drops a connection whose
// name another master took over. Its watch costs no etcd request while no
// question is asked.
func (m *Member) Hold(h slave.Holder) {
	m.wg.Go(func() { m.serve(h) })
}

func (m *Member) serve(h slave.Holder) {
	prefix := m.cfg.Prefix + "requests/ping/"
	var next int64 // the revision to watch from; 0: from now
	for m.ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if next > 0 {
			opts = append(opts, clientv3.WithRev(next))
		}
		for wr := range m.client.Watch(clientv3.WithRequireLeader(m.ctx), prefix, opts...) {
			if wr.CompactRevision > 0 {
				next = 0
			}
			for _, ev := range wr.Events {
				next = ev.Kv.ModRevision + 1
				var p PingInfo
				if ev.Type != clientv3.EventTypePut || decode(string(ev.Kv.Key), ev.Kv.Value, &p) != nil {
					continue
				}
				switch {
				case p.Kind == PingAsk && p.From != m.cfg.ID:
					rev := ev.Kv.ModRevision
					m.wg.Go(func() { m.answer(h, p, rev) })
				case p.Kind == PingTaken && p.Owner == m.cfg.ID:
					h.DropAttached(p.Slave, fmt.Errorf("master %q took the slave's name over after this master did not answer its ping in time", p.From))
				}
			}
		}
		select { // the watch ended (etcd lost its leader, or the member closed): watch again
		case <-m.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// answer pings the connection another master asked about, and answers
// that it is alive if it is; a connection that did not answer has been
// dropped and its name released, which the asking master sees.
func (m *Member) answer(h slave.Holder, p PingInfo, rev int64) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = m.cfg.PingTimeout
	}
	ctx, cancel := context.WithTimeout(m.ctx, timeout)
	defer cancel()
	if h.PingAttached(ctx, p.Slave, "master "+p.From) != nil {
		return
	}
	val, err := encode(PingInfo{Kind: PingAlive, Slave: p.Slave, From: m.cfg.ID})
	if err != nil {
		return
	}
	key := m.askKey(p.Slave)
	if _, err := m.client.Txn(m.ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, val, clientv3.WithIgnoreLease())).
		Commit(); err != nil {
		m.cfg.Logger.Warn("cluster: answering another master's ping request failed", "slave", p.Slave, "asked_by", p.From, "reason", err.Error())
	}
}
