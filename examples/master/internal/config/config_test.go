package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/docker"
	"github.com/buildslave/buildslave/internal/testcert"
	"github.com/buildslave/buildslave/latent/local"
	"github.com/buildslave/buildslave/slave"
)

// env is the environment the tests' password_env keys see.
func env(k string) (string, bool) {
	v, ok := map[string]string{"BOT_PW": "from-env", "EMPTY": ""}[k]
	return v, ok
}

func parse(t *testing.T, src string) (*Config, error) {
	t.Helper()
	return Parse(filepath.Join(t.TempDir(), "master.toml"), []byte(src), env)
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := parse(t, src)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const full = `
[master]
listen = "127.0.0.1:19989"
listen_msgpack = "127.0.0.1:19990"
http = "127.0.0.1:18010"
master_id = "m1"
log_format = "json"
max_starting = 2
max_running = 3
reap_interval = "-1s"
check_interval = "1s"
stop_timeout = "2m"
keepalive_timeout = "30s"
duplicate_ping_timeout = "5s"
attach_timeout = "20s"
history = 7

[mail]
fromaddr = "ci@example.com"
relayhost = "smtp.example.com:25"
username = "ci"
password_env = "BOT_PW"
starttls = true
timeout = "10s"

[[slaves]]
name = "bot1"
password = "sekrit"
properties = { os = "linux", cores = 4 }
max_builds = 2
keepalive_interval = "none"
notify_on_missing = "admin@example.com"
missing_timeout = "90s"

[[slaves]]
name = "bot2"
password_env = "BOT_PW"
keepalive_interval = "10m"
notify_on_missing = ["a@example.com", "b@example.com"]

[[latent_slaves]]
kind = "local"
name = "l1"
build_wait_timeout = "0s"
max_builds = 1
[latent_slaves.local]
program = "/bin/true"
args = ["-x"]
env = ["A=1"]
kill_timeout = "3s"

[[builders]]
name = "hello"
slaves = ["bot1", "l1"]
  [[builders.steps]]
  name = "greet"
  shell = "echo hi"
  env = { X = "1" }
  timeout = "5m"
  [[builders.steps]]
  upload = "out.txt"

[[schedulers]]
builder = "hello"
periodic = "10m"
at_start = true
`

func TestParseEveryField(t *testing.T) {
	c := mustParse(t, full)
	if c.Listen != "127.0.0.1:19989" || c.ListenMsgpack != "127.0.0.1:19990" || c.HTTP != "127.0.0.1:18010" || !c.LogJSON || c.History != 7 {
		t.Errorf("master: %+v", c)
	}
	lc := c.Lifecycle
	if lc.MasterID != "m1" || lc.MaxStarting != 2 || lc.MaxRunning != 3 || lc.ReapInterval != -time.Second || lc.CheckInterval != time.Second || lc.StopTimeout != 2*time.Minute {
		t.Errorf("lifecycle: %+v", lc)
	}
	if c.Manager.KeepaliveTimeout != 30*time.Second || c.Manager.DuplicatePingTimeout != 5*time.Second || c.AttachTimeout != 20*time.Second {
		t.Errorf("manager: %+v, attach %v", c.Manager, c.AttachTimeout)
	}
	if m := c.Manager.Notifier.(interface{ String() string }).String(); !strings.Contains(m, "smtp.example.com:25") {
		t.Errorf("mail: %s", m)
	}
	if len(c.Slaves) != 2 {
		t.Fatalf("slaves: %v", c.Slaves)
	}
	b1, b2 := c.Slaves[0], c.Slaves[1]
	if !b1.CheckPassword("sekrit") || b1.MaxBuilds() != 2 || b1.KeepaliveInterval() != slave.Disabled || b1.MissingTimeout() != 90*time.Second ||
		b1.Properties()["os"] != "linux" || b1.Properties()["cores"] != int64(4) || b1.NotifyOnMissing()[0] != "admin@example.com" {
		t.Errorf("bot1: %v %v %v %v %v", b1.MaxBuilds(), b1.KeepaliveInterval(), b1.MissingTimeout(), b1.Properties(), b1.NotifyOnMissing())
	}
	if !b2.CheckPassword("from-env") || b2.KeepaliveInterval() != 10*time.Minute || len(b2.NotifyOnMissing()) != 2 || b2.MissingTimeout() != slave.DefaultMissingTimeout {
		t.Errorf("bot2: %v %v %v", b2.KeepaliveInterval(), b2.NotifyOnMissing(), b2.MissingTimeout())
	}
	d, err := c.Latents[0].Driver(DriverEnv{Master: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if d.(*local.Driver).BuildWaitTimeout() != 0 || d.Slave().MaxBuilds() != 1 || d.Slave().Name() != "l1" {
		t.Errorf("latent: %v %v", d.(*local.Driver).BuildWaitTimeout(), d.Slave().MaxBuilds())
	}
	b := c.Builders[0]
	if b.Name != "hello" || len(b.Steps) != 2 || b.Steps[0].Timeout != 5*time.Minute || b.Steps[0].Env["X"] != "1" || b.Steps[1].Name != "step 2" || b.Steps[1].Upload != "out.txt" {
		t.Errorf("builder: %+v", b)
	}
	if s := c.Schedules[0]; s.Builder != "hello" || s.Every != 10*time.Minute || !s.AtStart {
		t.Errorf("schedule: %+v", s)
	}
}

func TestPasswordFileAndDefaults(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("from-file\n"), 0o600)
	src := "[[slaves]]\nname = \"a\"\npassword_file = \"pw\"\n"
	c, err := Parse(filepath.Join(dir, "master.toml"), []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Slaves[0].CheckPassword("from-file") {
		t.Error("password_file not read relative to the file")
	}
	if c.Listen != DefaultListen || c.ListenMsgpack != DefaultListenMsgpack || c.HTTP != DefaultHTTP || c.History != DefaultHistory || c.Slaves[0].KeepaliveInterval() != slave.DefaultKeepaliveInterval {
		t.Errorf("defaults: %+v", c)
	}
	// A latent slave without a password gets a random one; the default
	// program is this executable run as "slave".
	c = mustParse(t, "[master]\nmaster_id = \"m\"\n[[latent_slaves]]\nkind = \"local\"\nname = \"l\"\n")
	if c.Latents[0].Entry.Kind != "local" {
		t.Errorf("latent: %+v", c.Latents[0])
	}
}

func TestProblemsWithLines(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"syntax", "[master\n", []string{"master.toml:2: expected"}},
		{"type", "[[slaves]]\nname = \"a\"\nmax_builds = \"two\"\n", []string{"master.toml:3: incompatible types"}},
		{"unknown key", "[master]\nlisten = \"x:1\"\nlistne = \"y\"\n", []string{"master.toml:3: master.listne: unknown key"}},
		{"negative max_builds", "[[slaves]]\nname = \"bot1\"\npassword = \"p\"\n[[slaves]]\nname = \"bot2\"\npassword = \"p\"\nmax_builds = -1\n",
			[]string{`master.toml:7: slaves[1] "bot2": max_builds: must not be negative`}},
		{"password missing", "[[slaves]]\nname = \"a\"\n", []string{`master.toml:1: slaves[0] "a": password: missing`}},
		{"two passwords", "[[slaves]]\nname = \"a\"\npassword = \"p\"\npassword_env = \"BOT_PW\"\n", []string{`:3: slaves[0] "a": password: give one of`}},
		{"env unset", "[[slaves]]\nname = \"a\"\npassword_env = \"EMPTY\"\n", []string{`:3: slaves[0] "a": password_env: the environment variable EMPTY is not set`}},
		{"file missing", "[[slaves]]\nname = \"a\"\npassword_file = \"/nonexistent\"\n", []string{`:3: slaves[0] "a": password_file: open /nonexistent`}},
		{"durations", "[[slaves]]\nname = \"a\"\npassword = \"p\"\nkeepalive_interval = \"0s\"\nmissing_timeout = 5\n",
			[]string{`:4: slaves[0] "a": keepalive_interval: must be positive, got 0s (use "none" to turn it off)`, `:5: slaves[0] "a": missing_timeout: want a duration string`}},
		{"bad duration", "[master]\nstop_timeout = \"soon\"\n", []string{`:2: master: stop_timeout: "soon" is not a duration`}},
		{"library check", "[[slaves]]\nname = \"a:b\"\npassword = \"p\"\nnotify_on_missing = \"not an address\"\n",
			[]string{`:2: slaves[0] "a:b": name: must not contain ':'`, `:4: slaves[0] "a:b": notify_on_missing: "not an address" is not an e-mail address`}},
		{"duplicate name", "[[slaves]]\nname = \"a\"\npassword = \"p\"\n[master]\nmaster_id = \"m\"\n[[latent_slaves]]\nkind = \"local\"\nname = \"a\"\n",
			[]string{`:8: latent_slaves[0] "a": name: "a" is already the name of slaves[0]`}},
		{"latent", "[[latent_slaves]]\nname = \"l\"\nbuild_wait_timeout = \"x\"\n[[latent_slaves]]\nkind = \"ec2\"\nname = \"e\"\n[[latent_slaves]]\nkind = \"vmware\"\nname = \"v\"\n[latent_slaves.local]\nprogram = \"x\"\n",
			[]string{`master: master_id: required with latent_slaves`, `:1: latent_slaves[0] "l": kind: missing`, `:3: latent_slaves[0] "l": build_wait_timeout: "x" is not a duration`,
				`:4: latent_slaves[1] "e": ec2: missing`, `:8: latent_slaves[2] "v": kind: "vmware" is not one of`, `:10: latent_slaves[2] "v": local: a [latent_slaves.local] table for a slave of kind "vmware"`}},
		{"ec2 library check", "[master]\nmaster_id = \"m\"\n[[latent_slaves]]\nkind = \"ec2\"\nname = \"e\"\n[latent_slaves.ec2]\ninstance_type = \"m1.large\"\nmax_spot_price = 1.5\n",
			[]string{`:8: latent_slaves[0] "e": ec2.max_spot_price: set without spot_instance`, `latent_slaves[0] "e": ami`}},
		{"builders", "[[slaves]]\nname = \"a\"\npassword = \"p\"\n[[builders]]\nname = \"x/y\"\nslaves = [\"nobody\"]\n  [[builders.steps]]\n  name = \"s\"\n  [[builders.steps]]\n  shell = \"true\"\n  upload = \"f\"\n[[builders]]\nname = \"e\"\nslaves = []\n",
			[]string{`:5: builders[0] "x/y": name: must not be . or ..`, `:6: builders[0] "x/y": slaves: "nobody" is not a slave`, `:7: builders[0].steps[0] "s": give shell`,
				`:11: builders[0].steps[1]: upload: give shell or upload, not both`, `:14: builders[1] "e": slaves: must name at least one slave`, `:12: builders[1] "e": steps: missing`}},
		{"schedulers", "[[schedulers]]\nbuilder = \"nope\"\nperiodic = \"-1m\"\n[[schedulers]]\nbuilder = \"nope\"\n",
			[]string{`:2: schedulers[0] "nope": builder: "nope" is not a builder`, `:3: schedulers[0] "nope": periodic: must be positive`, `:4: schedulers[1] "nope": give periodic or at_start`}},
		{"master", "[master]\nlog_format = \"xml\"\ntls_cert = \"c.pem\"\nmax_starting = -1\n", []string{`:2: master: log_format: "xml" is not one of text, json`, `:3: master: tls_cert: give tls_cert and tls_key together`, `:4: master: max_starting: must not be negative`}},
		{"mail", "[mail]\nfromaddr = \"not an address\"\nbuilders = []\n", []string{`:3: mail: builders: the example master sends no build mail`, `master.toml:1: mail: `}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src)
			if err == nil {
				t.Fatal("no error")
			}
			var p *Problem
			if !errors.As(err, &p) {
				t.Errorf("%T is not a *Problem", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestPositions(t *testing.T) {
	pos := scanPositions(`[master]
listen = "x"
[[builders]]
name = "a"
  [[builders.steps]]
  shell = """
[[not.a.header]]
name = "no"
"""
  [[builders.steps]]
  shell = "b"
[[builders]]
  [[builders.steps]]
  "upload" = "c"
`)
	for path, want := range map[string]int{"master.listen": 2, "builders[0]": 3, "builders[0].name": 4, "builders[0].steps[0].shell": 6,
		"builders[0].steps[1]": 10, "builders[0].steps[1].shell": 11, "builders[1].steps[0]": 13, "builders[1].steps[0].upload": 14} {
		if got := pos.line(path); got != want {
			t.Errorf("line(%s) = %d, want %d", path, got, want)
		}
	}
	if _, ok := pos["not.a.header[0]"]; ok {
		t.Error("a multi-line string was read as a header")
	}
}

func TestBlockDeviceMap(t *testing.T) {
	src := `[master]
master_id = "m"
[[latent_slaves]]
kind = "ec2"
name = "e"
[latent_slaves.ec2]
instance_type = "m5.large"
ami = "ami-1"
[[latent_slaves.ec2.block_device_map]]
device_name = "/dev/sda1"
volume_size = 50
volume_type = "gp3"
iops = 3000
encrypted = true
delete_on_termination = false
[[latent_slaves.ec2.block_device_map]]
device_name = "/dev/sdb"
virtual_name = "ephemeral0"
`
	c := mustParse(t, src)
	p := &problems{file: "master.toml"}
	got := blockDevices(entry{p: p}, c.Raw.LatentSlaves[0].EC2.BlockDeviceMap)
	if len(p.list) != 0 || len(got) != 2 {
		t.Fatalf("mappings %+v, problems %v", got, p.list)
	}
	root, eph := got[0], got[1]
	if *root.DeviceName != "/dev/sda1" || *root.Ebs.VolumeSize != 50 || root.Ebs.VolumeType != "gp3" ||
		*root.Ebs.Iops != 3000 || !*root.Ebs.Encrypted || *root.Ebs.DeleteOnTermination {
		t.Errorf("root volume %+v / %+v", root, *root.Ebs)
	}
	if *eph.VirtualName != "ephemeral0" || eph.Ebs != nil {
		t.Errorf("instance store %+v", eph)
	}

	_, err := parse(t, strings.Replace(src, `device_name = "/dev/sdb"`, ``, 1))
	if err == nil || !strings.Contains(err.Error(), `ec2.block_device_map[1].device_name: missing`) {
		t.Errorf("a mapping without device_name: %v", err)
	}
}

const dockerLatent = `[master]
master_id = "m"
[[latent_slaves]]
kind = "docker"
name = "d1"
max_builds = 1
properties = { os = "scratch" }
missing_timeout = "2m"
[latent_slaves.docker]
docker_host = "tcp://127.0.0.1:2376"
image = "buildslave-slave"
command = ["/bin/slave", "-basedir", "/build"]
volumes = ["/srv/cache:/cache:ro", "named:/named"]
dockerfile = """
FROM scratch
ARG V
"""
encoding = "gzip"
buildargs = { V = "1" }
target = "final"
version = "1.41"
followStartupLogs = true
masterFQDN = "172.17.0.1:9989"
hostconfig = { network_mode = "bridge", mem_limit = "512m", nano_cpus = 1500000000, extra_hosts = ["master:172.17.0.1"], privileged = true }
allow_privileged = true
autopull = true
alwaysPull = true
hostname = "box"
[latent_slaves.docker.tls]
ca_cert = "ca.pem"
client_cert = "cert.pem"
client_key = "key.pem"
`

// TestDockerEveryOption parses a Docker latent slave with every option
// (TLS files made here) and checks what the driver keeps; New reaches no
// daemon.
func TestDockerEveryOption(t *testing.T) {
	dir := t.TempDir()
	certs := testcert.Write(t, dir)
	src := strings.NewReplacer(`"ca.pem"`, strconv.Quote(certs.CA), `"cert.pem"`, strconv.Quote(certs.ClientCert), `"key.pem"`, strconv.Quote(certs.ClientKey)).Replace(dockerLatent)
	c, err := Parse(filepath.Join(dir, "master.toml"), []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Latents[0].Driver(DriverEnv{Master: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.(*docker.Slave).Close()
	ds := d.(*docker.Slave)
	if ds.BuildWaitTimeout() != docker.DefaultBuildWaitTimeout || ds.Slave().MaxBuilds() != 1 || ds.Slave().MissingTimeout() != 2*time.Minute || ds.Slave().Properties()["os"] != "scratch" {
		t.Errorf("docker slave: wait %v, max builds %d, missing %v, properties %v", ds.BuildWaitTimeout(), ds.Slave().MaxBuilds(), ds.Slave().MissingTimeout(), ds.Slave().Properties())
	}
	if x := c.Latents[0].Entry.Docker; x.HostConfig["mem_limit"] != "512m" || x.TLS.ClientKey != certs.ClientKey || !x.AlwaysPull || x.BuildArgs["V"] != "1" {
		t.Errorf("entry %+v", x)
	}
	// An explicit build_wait_timeout replaces Docker's default of 0.
	c, err = Parse(filepath.Join(dir, "master.toml"), []byte(strings.Replace(src, `max_builds = 1`, `build_wait_timeout = "90s"`, 1)), env)
	if err != nil {
		t.Fatal(err)
	}
	d, err = c.Latents[0].Driver(DriverEnv{Master: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.(*docker.Slave).Close()
	if got := d.(*docker.Slave).BuildWaitTimeout(); got != 90*time.Second {
		t.Errorf("build_wait_timeout 90s: %v", got)
	}
}

func TestDockerProblems(t *testing.T) {
	const head = "[master]\nmaster_id = \"m\"\n[[latent_slaves]]\nkind = \"docker\"\nname = \"d\"\n"
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"no table", head, []string{`:3: latent_slaves[0] "d": docker: missing`}},
		{"another kind's table", head + "[latent_slaves.local]\nprogram = \"x\"\n[latent_slaves.docker]\nimage = \"i\"\n",
			[]string{`:6: latent_slaves[0] "d": local: a [latent_slaves.local] table for a slave of kind "docker"`}},
		{"no image", head + "[latent_slaves.docker]\nhostname = \"h\"\n", []string{`latent_slaves[0] "d": image: give an image, a dockerfile or both`}},
		{"library checks", head + "[latent_slaves.docker]\nimage = \"i\"\nvolumes = [\"/a:relative\"]\nalwaysPull = true\nmasterFQDN = \"m:0\"\n",
			[]string{`:8: latent_slaves[0] "d": docker.volumes: `, `:9: latent_slaves[0] "d": docker.alwaysPull: takes effect only with autopull`, `:10: latent_slaves[0] "d": docker.masterFQDN: bad port`}},
		{"hostconfig", head + "[latent_slaves.docker]\nimage = \"i\"\nhostconfig = { mem_limit = \"lots\" }\n",
			[]string{`:8: latent_slaves[0] "d": docker.hostconfig: hostconfig mem_limit: `}},
		{"unknown hostconfig key", head + "[latent_slaves.docker]\nimage = \"i\"\n[latent_slaves.docker.hostconfig]\nnetwork_mode = \"host\"\nmemory = 1\n",
			[]string{`:8: latent_slaves[0] "d": docker.hostconfig: hostconfig memory: unknown key`}},
		{"privileged", head + "[latent_slaves.docker]\nimage = \"i\"\nhostconfig = { privileged = true }\n",
			[]string{`:8: latent_slaves[0] "d": docker.hostconfig: privileged containers are root on the Docker host`}},
		{"hostname on the host's network", head + "[latent_slaves.docker]\nimage = \"i\"\nhostname = \"h\"\nhostconfig = { network_mode = \"host\" }\n",
			[]string{`:8: latent_slaves[0] "d": docker.hostname: Docker refuses a hostname with network mode host`}},
		{"tls on a socket", head + "[latent_slaves.docker]\nimage = \"i\"\ndocker_host = \"unix:///run/docker.sock\"\n[latent_slaves.docker.tls]\nca_cert = \"ca.pem\"\n",
			[]string{`:9: latent_slaves[0] "d": docker.tls: needs a tcp:// docker_host`}},
		{"tls files missing", head + "[latent_slaves.docker]\nimage = \"i\"\ndocker_host = \"tcp://127.0.0.1:2376\"\n[latent_slaves.docker.tls]\nca_cert = \"missing.pem\"\n",
			[]string{`:9: latent_slaves[0] "d": docker.tls: `, `missing.pem`}},
		{"misspelt key", head + "[latent_slaves.docker]\nimage = \"i\"\nfollow_startup_logs = true\n",
			[]string{`:8: latent_slaves[0].docker.follow_startup_logs: unknown key`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
