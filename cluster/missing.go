package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
)

// MissingInfo is the missing notice a detached slave is owed if it attaches
// to no master before Due. Release records it with the name, under no lease,
// so that it outlives the master that recorded it; a Claim anywhere deletes
// it. The master that sends it marks itself Sender first, in a transaction,
// and Sent once it is sent.
type MissingInfo struct {
	// Notice is the notice to send; its Detected is set when it is sent.
	Notice notify.Missing `json:"notice"`
	// Due is when the slave's missing_timeout ends, by the recording
	// master's clock: for people only; SweepMissing goes by the lease of
	// missing-due/<slave>, which etcd ends then.
	Due time.Time `json:"due"`
	// Master is the id of the master the slave detached from, and Lease
	// that master's lease then: the record is that master's to send while
	// the lease lives, and any master's (SweepMissing) after.
	Master string `json:"master"`
	Lease  int64  `json:"lease"`
	// Sender and SenderLease name the master sending the notice, once one
	// took it.
	Sender      string `json:"sender,omitempty"`
	SenderLease int64  `json:"sender_lease,omitempty"`
	// Sent is when the notice was sent: the record then stays, so that no
	// master sends it again, until a Claim deletes it.
	Sent time.Time `json:"sent,omitzero"`
}

func (m *Member) missingKey(name string) string { return m.cfg.Prefix + "missing/" + name }

func (m *Member) dueKey(name string) string { return m.cfg.Prefix + "missing-due/" + name }

// dueOp puts missing-due/<name> under a lease of its own, granted for the
// time left until due (1 s at least): etcd ends it when the notice is due.
// SweepMissing judges a dead master's notice due by that key's absence, so
// that etcd's clock decides, not the recording master's (Due) against the
// sweeper's.
func (m *Member) dueOp(ctx context.Context, name string, due time.Time) (clientv3.Op, error) {
	ttl := max(int64(math.Ceil(time.Until(due).Seconds())), 1)
	lease, err := m.client.Grant(ctx, ttl)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("cluster: recording the missing notice of slave %q: %w", name, err)
	}
	return clientv3.OpPut(m.dueKey(name), "", clientv3.WithLease(lease.ID)), nil
}

// SendMissing sends, through send, a slave's missing notice once per loss
// cluster-wide, when the slave's missing_timeout ran out on this master:
//   - if this master's Release recorded the loss, that record's notice,
//     unless a Claim anywhere cancelled it or another master took it
//     (SweepMissing, after this master's lease ended);
//   - else (the slave never attached here) missing, if no master holds the
//     slave and none recorded a loss of it: one transaction creates the
//     record, so that of several masters whose timers ran out only one
//     sends. Whether a master holds the slave is read from one listing of
//     the owners shared by the calls of the same second, so that a fleet
//     configured on every master costs one read per master, not one per
//     slave.
//
// The record is taken in one transaction, send is called, and the record
// is marked sent; it stays until the slave attaches somewhere. It returns
// nil without calling send when there is nothing to send from here.
func (m *Member) SendMissing(ctx context.Context, missing slave.MissingNotice, send func(ctx context.Context) error) error {
	name := missing.Slave
	key := m.missingKey(name)
	sendIt := func(ctx context.Context, _ notify.Missing) error { return send(ctx) }
	m.missingMu.Lock()
	p, ok := m.missing[name]
	delete(m.missing, name)
	m.missingMu.Unlock()
	if ok {
		return m.sendMissing(ctx, p.info, sendIt, clientv3.Compare(clientv3.ModRevision(key), "=", p.rev))
	}
	held, err := m.held(ctx, name)
	if err != nil || held {
		return err
	}
	info := MissingInfo{Notice: missing.Missing, Due: missing.Due, Master: m.cfg.ID, Lease: int64(m.session.Lease())}
	return m.sendMissing(ctx, info, sendIt,
		clientv3.Compare(clientv3.CreateRevision(m.ownerKey(name)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
}

// ownersSnapshotAge is how long a listing of the owners serves SendMissing.
const ownersSnapshotAge = time.Second

// held reports whether a master holds the slave, by a listing of the owners
// at most ownersSnapshotAge old.
func (m *Member) held(ctx context.Context, name string) (bool, error) {
	m.ownersMu.Lock()
	defer m.ownersMu.Unlock()
	if m.ownersSeen == nil || time.Since(m.ownersAt) > ownersSnapshotAge {
		prefix := m.cfg.Prefix + "owners/"
		resp, err := m.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return false, fmt.Errorf("cluster: listing owners for a missing notice: %w", err)
		}
		m.ownersSeen = make(map[string]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			m.ownersSeen[strings.TrimPrefix(string(kv.Key), prefix)] = true
		}
		m.ownersAt = time.Now()
	}
	return m.ownersSeen[name], nil
}

// pendingMissing is a missing notice this master recorded and has not sent.
type pendingMissing struct {
	rev  int64 // the record's mod revision
	info MissingInfo
}

// sendMissing takes the record of info as this master's to send, if cmps
// hold, sends it and marks it sent.
func (m *Member) sendMissing(ctx context.Context, info MissingInfo, send func(context.Context, notify.Missing) error, cmps ...clientv3.Cmp) error {
	key := m.missingKey(info.Notice.Slave)
	info.Sender, info.SenderLease = m.cfg.ID, int64(m.session.Lease())
	val, err := encode(info)
	if err != nil {
		return err
	}
	resp, err := m.client.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, val)).Commit()
	if err != nil {
		return fmt.Errorf("cluster: taking the missing notice of slave %q: %w", info.Notice.Slave, err)
	}
	if !resp.Succeeded {
		return nil // it attached somewhere, or another master took it
	}
	taken := resp.Header.Revision
	notice := info.Notice
	notice.Detected = time.Now()
	sendErr := send(ctx, notice)
	info.Sent = notice.Detected
	if val, err = encode(info); err != nil {
		return errors.Join(sendErr, err)
	}
	_, err = m.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", taken)).
		Then(clientv3.OpPut(key, val)).
		Commit()
	if err != nil {
		err = fmt.Errorf("cluster: marking the missing notice of slave %q sent: %w", info.Notice.Slave, err)
	}
	return errors.Join(sendErr, err)
}

// SweepMissing sends the missing notices that masters which died (whose lease
// ended) recorded and did not send, once due, through send (a
// notify.Notifier's SlaveMissing), until ctx ends; one master at a time
// should run it: the leader, from LeaderConfig.WhileLeading. Every LeaseTTL
// it reads the missing/ records (one request), the missing-due/ keys while
// one is unsent, and the members when one is due. A notice is taken in a transaction before it is sent, so that two
// sweepers, or a sweeper and the recording master, never both send it; a
// sender that dies between sending and deleting the record leaves it to be
// sent again. A record marked sent stays until the slave attaches
// somewhere; it is not sent again. Errors are logged; it returns ctx's
// error.
func (m *Member) SweepMissing(ctx context.Context, send func(context.Context, notify.Missing) error) error {
	t := time.NewTicker(m.cfg.LeaseTTL)
	defer t.Stop()
	for {
		if err := m.sweepMissing(ctx, send); err != nil && ctx.Err() == nil {
			m.cfg.Logger.Warn("cluster: missing-notice sweep", "reason", err.Error())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// sweepMissing is one pass of SweepMissing.
func (m *Member) sweepMissing(ctx context.Context, send func(context.Context, notify.Missing) error) error {
	resp, err := m.client.Get(ctx, m.cfg.Prefix+"missing/", clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("listing missing notices: %w", err)
	}
	type record struct {
		key  string
		rev  int64
		info MissingInfo
	}
	var due []record
	var errs []error
	for _, kv := range resp.Kvs {
		r := record{key: string(kv.Key), rev: kv.ModRevision}
		if err := decode(r.key, kv.Value, &r.info); err != nil {
			errs = append(errs, err)
			continue
		}
		if r.info.Sent.IsZero() {
			due = append(due, r)
		}
	}
	if len(due) == 0 {
		return errors.Join(errs...)
	}
	pending, err := m.client.Get(ctx, m.cfg.Prefix+"missing-due/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing missing notices not due yet: %w", err))...)
	}
	notYet := make(map[string]bool, len(pending.Kvs))
	for _, kv := range pending.Kvs {
		notYet[m.missingKey(strings.TrimPrefix(string(kv.Key), m.cfg.Prefix+"missing-due/"))] = true
	}
	due = slices.DeleteFunc(due, func(r record) bool { return notYet[r.key] })
	if len(due) == 0 {
		return errors.Join(errs...)
	}
	members, err := m.client.Get(ctx, m.cfg.Prefix+"members/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing members: %w", err))...)
	}
	live := m.memberLeases(members.Kvs)
	alive := func(id string, lease int64) bool { l, ok := live[id]; return ok && l == lease }
	for _, r := range due {
		if alive(r.info.Master, r.info.Lease) || (r.info.Sender != "" && alive(r.info.Sender, r.info.SenderLease)) {
			continue // the recording master sends it, or a live one is sending it
		}
		if err := m.sendMissing(ctx, r.info, send, clientv3.Compare(clientv3.ModRevision(r.key), "=", r.rev)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
