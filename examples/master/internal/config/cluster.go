package config

import (
	"cmp"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/buildslave/buildslave/cluster"
)

// ClusterTable is the [cluster] table: the etcd cluster this master shares
// its fleet through with other masters (package cluster).
type ClusterTable struct {
	Etcd        Strings  `toml:"etcd"`
	Prefix      string   `toml:"prefix"`
	LeaseTTL    Duration `toml:"lease_ttl"`
	MasterID    string   `toml:"master_id"`
	DialTimeout Duration `toml:"dial_timeout"`
}

// cluster checks the [cluster] table, after [master]: without one
// c.Cluster stays nil and the master is alone, as before. The master's id in the cluster is
// [cluster] master_id, else [master] master_id, else hostname:port of
// listen; it also tags the latent instances, which the leader stops by it
// when this master dies, so the two master_ids may not differ.
func (c *Config) cluster(p *problems, t *ClusterTable, m Master) {
	if t == nil {
		return
	}
	masterID := m.MasterID
	e := p.entry("cluster", "")
	endpoints := e.strings("etcd", t.Etcd)
	if _, list := t.Etcd.raw.([]any); len(endpoints) == 0 && (t.Etcd.raw == nil || list) {
		e.add("etcd", "required: the etcd endpoints, such as [\"127.0.0.1:2379\"]")
	}
	for _, ep := range endpoints {
		if !validEndpoint(ep) {
			e.add("etcd", "%q is not host:port or an http(s) URL", ep)
		}
	}
	if t.Prefix != "" && !strings.HasPrefix(t.Prefix, "/") {
		e.add("prefix", "%q must start with /", t.Prefix)
	}
	ttl := e.duration("lease_ttl", t.LeaseTTL, cluster.DefaultLeaseTTL, positive)
	if ttl%time.Second != 0 || ttl < time.Second {
		e.add("lease_ttl", "must be a whole number of seconds, at least 1s, got %v", ttl)
	}
	id := cmp.Or(t.MasterID, masterID)
	switch {
	case t.MasterID != "" && masterID != "" && t.MasterID != masterID:
		e.add("master_id", "%q differs from [master] master_id %q, which tags this master's latent instances: the leader stops a dead master's instances by its cluster id, so give one id (or set only one of them)", t.MasterID, masterID)
	case strings.Contains(id, "/"):
		e.add("master_id", "%q must not contain /", id)
	case id == "":
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(c.Listen)
		id = cmp.Or(host, "localhost") + ":" + port
	}
	c.Cluster = &cluster.Config{
		ID:          id,
		Endpoints:   endpoints,
		Prefix:      t.Prefix,
		LeaseTTL:    ttl,
		DialTimeout: e.duration("dial_timeout", t.DialTimeout, 0, positive),
	}
	c.Lifecycle.MasterID = id
	if m.Basedir == "" { // masters on one host need basedirs of their own
		c.Basedir = filepath.Join(os.TempDir(), "buildslave-master-"+strings.ReplaceAll(id, ":", "-"))
	}
}

// validEndpoint reports whether s is an etcd endpoint: host:port or an
// http(s) URL with a host.
func validEndpoint(s string) bool {
	if u, err := url.Parse(s); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return u.Host != ""
	}
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != ""
}
