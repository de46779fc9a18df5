package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Format is the version of the records this package writes and reads. A
// record of another format (a newer master wrote it, or something else did)
// is refused with a *FormatError, never guessed at.
const Format = 1

// MemberInfo is one live master as the cluster sees it.
type MemberInfo struct {
	// ID is the master's id, unique in the cluster.
	ID string `json:"id"`
	// Addrs are the master's protocol addresses by protocol name, e.g.
	// {"pb": "10.0.0.1:9989", "msgpack": "10.0.0.1:9990"}.
	Addrs map[string]string `json:"addrs,omitempty"`
	// Started is when the master joined, by its own clock: for people only;
	// leases, never wall clocks, decide who is alive.
	Started time.Time `json:"started"`
}

// OwnerInfo says where a slave is attached.
type OwnerInfo struct {
	// Slave is the slave's name.
	Slave string `json:"slave"`
	// Master is the id of the master that holds the slave.
	Master string `json:"master"`
	// Addrs are that master's protocol addresses.
	Addrs map[string]string `json:"addrs,omitempty"`
}

// IntentInfo is the record of a latent start, written before the driver's
// Start is called and cleared once the instance is stopped.
type IntentInfo struct {
	// Slave is the latent slave's name.
	Slave string `json:"slave"`
	// Driver names the latent driver (e.g. "ec2", "libvirt", "local").
	Driver string `json:"driver"`
	// Master is the id of the master that starts the instance.
	Master string `json:"master"`
	// Instance is the driver's instance id, empty until SetInstance.
	Instance string `json:"instance,omitempty"`
	// Recorded is when the intent was recorded, by the master's clock.
	Recorded time.Time `json:"recorded"`
}

// envelope is what every record looks like in etcd: its format, then its body.
type envelope struct {
	Format int             `json:"format"`
	Body   json.RawMessage `json:"body"`
}

func encode(v any) (string, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(envelope{Format: Format, Body: body})
	return string(b), err
}

// FormatError is returned for a record this master cannot read: one of
// another format, or not a record at all.
type FormatError struct {
	Key    string
	Format int   // the record's format; 0 when it has none
	Err    error // the decoding error, for a record that is not one
}

func (e *FormatError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("cluster: record %q is not a cluster record: %v", e.Key, e.Err)
	}
	if e.Format > Format {
		return fmt.Sprintf("cluster: record %q has format %d, newer than this master reads (%d): upgrade this master", e.Key, e.Format, Format)
	}
	return fmt.Sprintf("cluster: record %q has unknown format %d (this master reads format %d)", e.Key, e.Format, Format)
}

func (e *FormatError) Unwrap() error { return e.Err }

func decode(key string, value []byte, v any) error {
	var env envelope
	if err := json.Unmarshal(value, &env); err != nil {
		return &FormatError{Key: key, Err: err}
	}
	if env.Format != Format {
		return &FormatError{Key: key, Format: env.Format}
	}
	if err := json.Unmarshal(env.Body, v); err != nil {
		return &FormatError{Key: key, Format: env.Format, Err: err}
	}
	return nil
}

// list reads every record under prefix (what names them, for the error),
// sorted by opts (by key if none). A record it cannot read is left out and
// reported in the joined error, next to the records it could read: what
// every listing returns.
func list[T any](ctx context.Context, cli *clientv3.Client, prefix, what string, opts ...clientv3.OpOption) ([]T, error) {
	if len(opts) == 0 {
		opts = []clientv3.OpOption{clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	}
	resp, err := cli.Get(ctx, prefix, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("cluster: listing %s: %w", what, err)
	}
	var out []T
	var errs []error
	for _, kv := range resp.Kvs {
		var v T
		if err := decode(string(kv.Key), kv.Value, &v); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, v)
	}
	return out, errors.Join(errs...)
}
