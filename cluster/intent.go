package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Starter is what the latent lifecycle consults before a driver's Start:
// RecordStart first, then SetInstance once the driver names the instance,
// then Clear once the instance is stopped. *Member is one.
type Starter interface {
	RecordStart(ctx context.Context, slave, driver string) (*Intent, error)
}

var _ Starter = (*Member)(nil)

// IntentExistsError is returned by RecordStart when the latent slave already
// has an intent record: it is starting or running on a master (this one or
// another), or a dead master left it for the leader to clean.
type IntentExistsError struct {
	Slave    string
	Existing IntentInfo
}

func (e *IntentExistsError) Error() string {
	inst := e.Existing.Instance
	if inst == "" {
		inst = "not known yet"
	}
	return fmt.Sprintf("cluster: latent slave %q is already being started by master %q (driver %q, instance %s, recorded %s)",
		e.Slave, e.Existing.Master, e.Existing.Driver, inst, e.Existing.Recorded.Format(time.RFC3339))
}

// ErrIntentGone is returned by Intent.SetInstance when the record is no
// longer this master's (the leader cleaned it after this master's lease
// ended): the instance must be stopped, not used.
var ErrIntentGone = errors.New("cluster: intent record gone or changed by another master")

// Intent is this master's record of one latent start.
type Intent struct {
	m    *Member
	key  string
	info IntentInfo
	rev  int64 // mod revision of the record as this master last wrote it
}

// Info is the record as this master last wrote it.
func (in *Intent) Info() IntentInfo { return in.info }

func (m *Member) intentKey(slave string) string { return m.cfg.Prefix + "intents/" + slave }

// RecordStart records, before the driver's Start is called, that this master
// is about to start an instance for the latent slave: one etcd write. The
// record lives under no lease, so that it outlives this master if it dies;
// it is written only while this master's lease is live. It returns an
// *IntentExistsError when the slave already has a record (at most one master
// starts a latent slave at a time, cluster-wide), and ErrSessionLost after
// this master's lease ended.
func (m *Member) RecordStart(ctx context.Context, slave, driver string) (*Intent, error) {
	if slave == "" {
		return nil, errors.New("cluster: RecordStart: empty slave name")
	}
	if err := m.live(); err != nil {
		return nil, fmt.Errorf("cluster: recording start of latent slave %q: %w", slave, err)
	}
	in := &Intent{m: m, key: m.intentKey(slave), info: IntentInfo{Slave: slave, Driver: driver, Master: m.cfg.ID, Recorded: time.Now().UTC()}}
	val, err := encode(in.info)
	if err != nil {
		return nil, err
	}
	resp, err := m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(m.key), "=", m.session.Lease()),
			clientv3.Compare(clientv3.CreateRevision(in.key), "=", 0)).
		Then(clientv3.OpPut(in.key, val)).
		Else(clientv3.OpGet(m.key, clientv3.WithCountOnly()), clientv3.OpGet(in.key)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster: recording start of latent slave %q: %w", slave, err)
	}
	if resp.Succeeded {
		in.rev = resp.Header.Revision
		return in, nil
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return nil, fmt.Errorf("cluster: recording start of latent slave %q: %w", slave, ErrSessionLost)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, fmt.Errorf("cluster: recording start of latent slave %q: %w", slave, ErrSessionLost)
	}
	var existing IntentInfo
	if err := decode(in.key, kvs[0].Value, &existing); err != nil {
		return nil, err
	}
	return nil, &IntentExistsError{Slave: slave, Existing: existing}
}

// SetInstance adds the driver's instance id to the record (one etcd write).
// It returns ErrIntentGone when the record was cleared or rewritten by
// another master meanwhile.
func (in *Intent) SetInstance(ctx context.Context, id string) error {
	info := in.info
	info.Instance = id
	val, err := encode(info)
	if err != nil {
		return err
	}
	resp, err := in.m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(in.key), "=", in.rev)).
		Then(clientv3.OpPut(in.key, val)).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: recording instance %q of latent slave %q: %w", id, in.info.Slave, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("cluster: recording instance %q of latent slave %q: %w", id, in.info.Slave, ErrIntentGone)
	}
	in.info, in.rev = info, resp.Header.Revision
	return nil
}

// Clear removes the record once the instance is stopped (one etcd write).
// A record already gone is not an error; one rewritten by another master is
// left alone and reported as ErrIntentGone.
func (in *Intent) Clear(ctx context.Context) error {
	resp, err := in.m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(in.key), "=", in.rev)).
		Then(clientv3.OpDelete(in.key)).
		Else(clientv3.OpGet(in.key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: clearing start of latent slave %q: %w", in.info.Slave, err)
	}
	if !resp.Succeeded && resp.Responses[0].GetResponseRange().Count > 0 {
		return fmt.Errorf("cluster: clearing start of latent slave %q: %w", in.info.Slave, ErrIntentGone)
	}
	return nil
}

// Intents lists every intent record in the cluster, sorted by slave name:
// what the leader reads to find a dead master's instances. A record it cannot
// read is left out and reported in the joined error.
func (m *Member) Intents(ctx context.Context) ([]IntentInfo, error) {
	return list[IntentInfo](ctx, m.client, m.cfg.Prefix+"intents/", "intents")
}
