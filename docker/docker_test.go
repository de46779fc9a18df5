package docker

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

func TestNewDefaults(t *testing.T) {
	s, err := New("bot", "pw", "unix:///var/run/docker.sock", Image("worker:1"), MasterFQDN("master.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.BuildWaitTimeout() != 0 {
		t.Errorf("build_wait_timeout %v, want Buildbot's 0 for Docker", s.BuildWaitTimeout())
	}
	if got := s.Slave().MissingTimeout(); got != latent.DefaultMissingTimeout {
		t.Errorf("missing_timeout %v, want %v", got, latent.DefaultMissingTimeout)
	}
	env := s.env(latent.StartRequest{Name: "bot", Password: "fresh", MasterID: "m"})
	for _, kv := range []string{"BUILDMASTER=master.example", "BUILDMASTER_PORT=9989", "WORKERNAME=bot", "WORKERPASS=fresh",
		"BUILDSLAVE_MASTER=master.example:9989", "BUILDSLAVE_NAME=bot", "BUILDSLAVE_PASSWORD=fresh"} {
		if !slices.Contains(env, kv) {
			t.Errorf("environment %q lacks %s", env, kv)
		}
	}
	s, err = New("bot", "pw", "", Image("worker:1"), MasterFQDN("[::1]:9000"), BuildWaitTimeout(time.Minute),
		SlaveOptions(slave.MaxBuilds(2), slave.MissingTimeout(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.BuildWaitTimeout() != time.Minute || s.Slave().MaxBuilds() != 2 || s.Slave().MissingTimeout() != time.Minute {
		t.Errorf("options not applied: %v %d %v", s.BuildWaitTimeout(), s.Slave().MaxBuilds(), s.Slave().MissingTimeout())
	}
	if env := s.env(latent.StartRequest{Name: "bot"}); !slices.Contains(env, "BUILDSLAVE_MASTER=[::1]:9000") || !slices.Contains(env, "BUILDMASTER=::1") {
		t.Errorf("IPv6 master: %q", env)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, c := range []struct {
		field string
		opts  []Option
		host  string
	}{
		{"image", nil, ""},
		{"docker_host", []Option{Image("i")}, "ftp://nowhere"},
		{"volumes", []Option{Image("i"), Volumes("/only-one-part")}, ""},
		{"volumes", []Option{Image("i"), Volumes("/a:relative")}, ""},
		{"volumes", []Option{Image("i"), Volumes("/a:/b:rx")}, ""},
		{"hostconfig", []Option{Image("i"), WithHostConfig(HostConfig{Privileged: true})}, ""},
		{"hostconfig", []Option{Image("i"), WithHostConfig(HostConfig{Memory: 1024})}, ""},
		{"hostconfig", []Option{Image("i"), WithHostConfig(HostConfig{ExtraHosts: []string{"noaddress"}})}, ""},
		{"hostname", []Option{Image("i"), Hostname("h"), WithHostConfig(HostConfig{NetworkMode: "host"})}, ""},
		{"alwaysPull", []Option{Image("i"), AlwaysPull(true)}, ""},
		{"masterFQDN", []Option{Image("i"), MasterFQDN("m:99999")}, ""},
		{"tls", []Option{Image("i"), WithTLS(TLS{CAFile: "ca.pem"})}, "unix:///var/run/docker.sock"},
		{"tls", []Option{Image("i"), WithTLS(TLS{CAFile: "/nonexistent/ca.pem"})}, "tcp://127.0.0.1:2376"},
	} {
		_, err := New("bot", "pw", c.host, c.opts...)
		var ce *slave.ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("%s: New = %v, want a ConfigError on %s", c.field, err, c.field)
		}
	}
	s, err := New("bot", "pw", "", Image("i"), WithHostConfig(HostConfig{Privileged: true}), AllowPrivileged())
	if err != nil {
		t.Errorf("privileged with AllowPrivileged: %v", err)
	} else {
		s.Close()
	}
}

func TestParseHostConfig(t *testing.T) {
	hc, err := ParseHostConfig(map[string]any{
		"network_mode": "host", "mem_limit": "512m", "memswap_limit": int64(1 << 30), "nano_cpus": 1.5e9,
		"cpu_shares": 512, "extra_hosts": map[string]any{"b": "10.0.0.2", "a": "10.0.0.1"}, "dns": []any{"1.1.1.1"},
		"shm_size": "64m", "cap_add": []any{"SYS_PTRACE"}, "init": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if hc.NetworkMode != "host" || hc.Memory != 512<<20 || hc.MemorySwap != 1<<30 || hc.CPUs != 1.5 || hc.CPUShares != 512 ||
		!slices.Equal(hc.ExtraHosts, []string{"a:10.0.0.1", "b:10.0.0.2"}) || hc.ShmSize != 64<<20 || !hc.Init || hc.Privileged {
		t.Errorf("parsed %+v", hc)
	}
	api := hc.api([]string{"/src:/dst:ro"})
	if api.NanoCPUs != 1.5e9 || api.Memory != 512<<20 || len(api.DNS) != 1 || api.Init == nil || !*api.Init || api.Binds[0] != "/src:/dst:ro" {
		t.Errorf("API host config %+v", api)
	}
	for _, bad := range []map[string]any{
		{"no_such_key": 1}, {"mem_limit": "lots"}, {"privileged": "yes"}, {"dns": []any{"not-an-ip"}}, {"extra_hosts": []any{"x"}},
	} {
		if _, err := ParseHostConfig(bad); err == nil {
			t.Errorf("ParseHostConfig(%v) accepted it", bad)
		}
	}
}

func TestContainerName(t *testing.T) {
	a, b := containerName("bot_1 x", "master-a"), containerName("bot_1 x", "master-b")
	if a == b || !strings.HasPrefix(a, "buildslave-bot-1-x-") {
		t.Errorf("names %q %q", a, b)
	}
}
