package cluster

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/slave"
)

var _ slave.Gate = (*Member)(nil)

// OwnedError is returned by Claim when another live master holds the name
// and its connection answered a ping (or another master took the name
// meanwhile). It wraps slave.ErrDuplicate.
type OwnedError struct {
	Name  string
	Owner OwnerInfo
}

func (e *OwnedError) Error() string {
	return fmt.Sprintf("cluster: slave %q is attached to master %q (%v)", e.Name, e.Owner.Master, e.Owner.Addrs)
}

// Unwrap returns slave.ErrDuplicate: the manager refuses the login as a
// duplicate.
func (e *OwnedError) Unwrap() error { return slave.ErrDuplicate }

func (m *Member) ownerKey(name string) string { return m.cfg.Prefix + "owners/" + name }

// Claim makes this master the owner of the slave name cluster-wide, under its
// lease, and cancels the missing notice the slave is owed (see Release): the
// name is freed by Release, by Close, or when this master's lease ends.
// Claiming a name this master already holds succeeds.
//
// A name held by another live master is decided as Buildbot 0.8.6 decides a
// duplicate on one master: the same transaction that finds the owner asks it
// (a PingInfo under requests/ping/) to ping its connection. If the owner
// answers that it did, Claim returns an *OwnedError. If the connection did
// not answer, the owner drops it and releases the name, and Claim takes it;
// if the owner does not answer within 1.5 × PingTimeout, Claim takes the name
// over (a transaction on the owner record's revision) and the owner drops its
// stale connection when it sees the takeover. A free name costs one etcd
// write, one held elsewhere two.
//
// It returns ErrSessionLost after this master's lease ended, and a
// *FormatError for an owner record it cannot read.
func (m *Member) Claim(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("cluster: Claim: empty slave name")
	}
	if err := m.live(); err != nil {
		return fmt.Errorf("cluster: claiming slave %q: %w", name, err)
	}
	key := m.ownerKey(name)
	lease := m.session.Lease()
	ask, err := encode(PingInfo{Kind: PingAsk, Slave: name, From: m.cfg.ID, Timeout: m.cfg.PingTimeout})
	if err != nil {
		return err
	}
	free, take, err := m.claimOps(name)
	if err != nil {
		return err
	}
	resp, err := m.client.Txn(ctx).If(free).Then(take...).
		Else(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", lease)},
			[]clientv3.Op{clientv3.OpGet(key)},
			[]clientv3.Op{clientv3.OpGet(key), clientv3.OpPut(m.askKey(name), ask, clientv3.WithLease(lease))})).
		Commit()
	if err != nil {
		return m.claimErr(name, err)
	}
	if resp.Succeeded {
		return nil
	}
	inner := resp.Responses[0].GetResponseTxn()
	if inner.Succeeded {
		return nil // ours already
	}
	kv := inner.Responses[0].GetResponseRange().Kvs[0]
	var owner OwnerInfo
	if err := decode(key, kv.Value, &owner); err != nil {
		return err
	}
	return m.ask(ctx, name, owner, kv.ModRevision, resp.Header.Revision)
}

// claimOps are the comparison that finds the name free and the operations
// that then make it this master's: its owner record under this master's
// lease, and the missing notice owed cancelled.
func (m *Member) claimOps(name string) (clientv3.Cmp, []clientv3.Op, error) {
	val, err := encode(OwnerInfo{Slave: name, Master: m.cfg.ID, Addrs: m.cfg.Addrs})
	if err != nil {
		return clientv3.Cmp{}, nil, err
	}
	key := m.ownerKey(name)
	return clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
		[]clientv3.Op{clientv3.OpPut(key, val, clientv3.WithLease(m.session.Lease())), clientv3.OpDelete(m.missingKey(name))},
		nil
}

func (m *Member) claimErr(name string, err error) error {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		err = ErrSessionLost
	}
	return fmt.Errorf("cluster: claiming slave %q: %w", name, err)
}

// claimFree claims a name whose owner let it go: one write.
func (m *Member) claimFree(ctx context.Context, name string) error {
	free, take, err := m.claimOps(name)
	if err != nil {
		return err
	}
	key := m.ownerKey(name)
	resp, err := m.client.Txn(ctx).If(free).Then(take...).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return m.claimErr(name, err)
	}
	if resp.Succeeded {
		return nil
	}
	return m.owned(key, name, resp.Responses[0].GetResponseRange().Kvs)
}

// owned is the error for a name whose owner record is kvs; nil if it is
// this master's.
func (m *Member) owned(key, name string, kvs []*mvccpb.KeyValue) error {
	if len(kvs) == 0 {
		return fmt.Errorf("cluster: claiming slave %q: its owner changed twice meanwhile; try again", name)
	}
	if clientv3.LeaseID(kvs[0].Lease) == m.session.Lease() {
		return nil
	}
	var owner OwnerInfo
	if err := decode(key, kvs[0].Value, &owner); err != nil {
		return err
	}
	return &OwnedError{Name: name, Owner: owner}
}

// Release gives up the slave name if this master holds it (one etcd write);
// a name held by another master, or by nobody, is left as it is. A non-nil
// missing is recorded in the same write, under missing/<name>, for
// SendMissing (or, if this master dies, SweepMissing) to send. Once this
// master's session has ended it holds no name (they went with its lease)
// and can record nothing: Release returns nil at once, without asking
// etcd, so that a master cut from etcd closes its slaves without waiting
// on etcd for each.
func (m *Member) Release(ctx context.Context, name string, missing *slave.MissingNotice) error {
	if m.live() != nil {
		return nil
	}
	key := m.ownerKey(name)
	ops := []clientv3.Op{clientv3.OpDelete(key)}
	var info MissingInfo
	if missing != nil {
		info = MissingInfo{Notice: missing.Missing, Due: missing.Due, Master: m.cfg.ID, Lease: int64(m.session.Lease())}
		val, err := encode(info)
		if err != nil {
			return err
		}
		due, err := m.dueOp(ctx, name, missing.Due)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(m.missingKey(name), val), due)
	}
	resp, err := m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", m.session.Lease())).
		Then(ops...).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: releasing slave %q: %w", name, err)
	}
	if resp.Succeeded && missing != nil {
		m.missingMu.Lock()
		if m.missing == nil {
			m.missing = make(map[string]pendingMissing)
		}
		m.missing[name] = pendingMissing{rev: resp.Header.Revision, info: info}
		m.missingMu.Unlock()
	}
	return nil
}

// Owner says where the slave is attached: ok is false when no live master
// holds it.
func (m *Member) Owner(ctx context.Context, name string) (owner OwnerInfo, ok bool, err error) {
	key := m.ownerKey(name)
	resp, err := m.client.Get(ctx, key)
	if err != nil {
		return OwnerInfo{}, false, fmt.Errorf("cluster: owner of slave %q: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return OwnerInfo{}, false, nil
	}
	if err := decode(key, resp.Kvs[0].Value, &owner); err != nil {
		return OwnerInfo{}, false, err
	}
	return owner, true, nil
}

// Owners lists every owned slave name in the cluster, sorted by name. A
// record it cannot read is left out and reported in the joined error.
func (m *Member) Owners(ctx context.Context) ([]OwnerInfo, error) {
	return list[OwnerInfo](ctx, m.client, m.cfg.Prefix+"owners/", "owners")
}
