package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestCluster(t *testing.T) {
	if c := mustParse(t, "[master]\nlisten = \"127.0.0.1:19989\"\n"); c.Cluster != nil {
		t.Fatalf("Cluster = %+v without [cluster], want nil", c.Cluster)
	}
	c := mustParse(t, `
[master]
listen = "127.0.0.1:19989"
[cluster]
etcd = ["127.0.0.1:2379", "http://127.0.0.2:2379"]
prefix = "/ci/"
lease_ttl = "5s"
dial_timeout = "2s"
[[latent_slaves]]
kind = "local"
name = "l1"
`)
	host, _ := os.Hostname()
	cc := c.Cluster
	if cc == nil || strings.Join(cc.Endpoints, ",") != "127.0.0.1:2379,http://127.0.0.2:2379" || cc.Prefix != "/ci/" ||
		cc.LeaseTTL != 5*time.Second || cc.DialTimeout != 2*time.Second || cc.ID != host+":19989" {
		t.Fatalf("Cluster = %+v; want the table's values, id %s:19989 (hostname:port of listen)", cc, host)
	}
	if c.Lifecycle.MasterID != cc.ID || !strings.HasSuffix(c.Basedir, "buildslave-master-"+host+"-19989") {
		t.Fatalf("latent MasterID %q, basedir %q; want the cluster id, a basedir of its own (latent slaves need no [master] master_id in a cluster)", c.Lifecycle.MasterID, c.Basedir)
	}
	c = mustParse(t, "[master]\nmaster_id = \"m1\"\n[cluster]\netcd = \"127.0.0.1:2379\"\n")
	if c.Cluster.ID != "m1" || c.Cluster.LeaseTTL != 10*time.Second {
		t.Fatalf("Cluster = %+v, want id m1 from [master], lease_ttl 10s by default", c.Cluster)
	}
	for _, tc := range []struct{ src, want string }{
		{"[cluster]\nprefix = \"/x/\"\n", `:1: cluster: etcd: required`},
		{"[cluster]\netcd = []\n", `:2: cluster: etcd: required`},
		{"[cluster]\netcd = [\"localhost\", \"ftp://x:1\"]\n", `:2: cluster: etcd: "localhost" is not host:port`},
		{"[cluster]\netcd = 7\n", `:2: cluster: etcd: want a string or a list of strings`},
		{"[cluster]\netcd = \"a:1\"\nprefix = \"ci\"\n", `:3: cluster: prefix: "ci" must start with /`},
		{"[cluster]\netcd = \"a:1\"\nlease_ttl = \"1500ms\"\n", `:3: cluster: lease_ttl: must be a whole number of seconds`},
		{"[cluster]\netcd = \"a:1\"\nlease_ttl = \"0s\"\n", `:3: cluster: lease_ttl: must be positive`},
		{"[master]\nmaster_id = \"a\"\n[cluster]\netcd = \"a:1\"\nmaster_id = \"b\"\n", `:5: cluster: master_id: "b" differs from [master] master_id "a"`},
		{"[cluster]\netcd = \"a:1\"\nmaster_id = \"a/b\"\n", `:3: cluster: master_id: "a/b" must not contain /`},
		{"[cluster]\netcd = \"a:1\"\nleader = true\n", `:3: cluster.leader: unknown key`},
	} {
		_, err := parse(t, tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}
