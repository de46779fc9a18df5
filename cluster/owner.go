package cluster

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Gate is what a transport or the slave manager consults at attach: Claim
// before accepting a slave name, Release after the slave detached. *Member
// is one; with no cluster configured, there is no Gate and attach is as on
// one master.
type Gate interface {
	Claim(ctx context.Context, name string) error
	Release(ctx context.Context, name string) error
}

var _ Gate = (*Member)(nil)

// OwnedError is returned by Claim when another live master holds the name.
type OwnedError struct {
	Name  string
	Owner OwnerInfo
}

func (e *OwnedError) Error() string {
	return fmt.Sprintf("cluster: slave %q is attached to master %q (%v)", e.Name, e.Owner.Master, e.Owner.Addrs)
}

func (m *Member) ownerKey(name string) string { return m.cfg.Prefix + "owners/" + name }

// Claim makes this master the owner of the slave name cluster-wide, under its
// lease: the name is freed by Release, by Close, or when this master's lease
// ends. It costs one etcd write (a single transaction: create the key if
// absent, else read it). Claiming a name this master already holds succeeds.
// It returns an *OwnedError naming the owner when another live master holds
// the name, ErrSessionLost after this master's lease ended, and a
// *FormatError for an owner record it cannot read.
func (m *Member) Claim(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("cluster: Claim: empty slave name")
	}
	if err := m.live(); err != nil {
		return fmt.Errorf("cluster: claiming slave %q: %w", name, err)
	}
	key := m.ownerKey(name)
	val, err := encode(OwnerInfo{Slave: name, Master: m.cfg.ID, Addrs: m.cfg.Addrs})
	if err != nil {
		return err
	}
	lease := m.session.Lease()
	resp, err := m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("cluster: claiming slave %q: %w", name, ErrSessionLost)
		}
		return fmt.Errorf("cluster: claiming slave %q: %w", name, err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 { // released between compare and get: cannot happen in one txn
		return fmt.Errorf("cluster: claiming slave %q: owner record vanished", name)
	}
	if clientv3.LeaseID(kvs[0].Lease) == lease {
		return nil // ours already
	}
	var owner OwnerInfo
	if err := decode(key, kvs[0].Value, &owner); err != nil {
		return err
	}
	return &OwnedError{Name: name, Owner: owner}
}

// Release gives up the slave name if this master holds it (one etcd write);
// a name held by another master, or by nobody, is left as it is.
func (m *Member) Release(ctx context.Context, name string) error {
	key := m.ownerKey(name)
	_, err := m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", m.session.Lease())).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: releasing slave %q: %w", name, err)
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
	resp, err := m.client.Get(ctx, m.cfg.Prefix+"owners/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("cluster: listing owners: %w", err)
	}
	var out []OwnerInfo
	var errs []error
	for _, kv := range resp.Kvs {
		var o OwnerInfo
		if err := decode(string(kv.Key), kv.Value, &o); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}
