// Package benchcfg generates the configurations the bench runs both masters
// with: a stock Buildbot 3.7 master.cfg and our example master's TOML file
// (the subset of examples/master's format the bench uses).
package benchcfg

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the part of the example master's TOML file the bench writes.
type Config struct {
	Master     Master      `toml:"master"`
	Slaves     []Slave     `toml:"slaves"`
	Builders   []Builder   `toml:"builders"`
	Schedulers []Scheduler `toml:"schedulers,omitempty"`
}

// Master is the [master] table.
type Master struct {
	// Listen is the Perspective Broker address (Buildbot's 9989).
	Listen string `toml:"listen"`
	// ListenMsgpack is the msgpack_experimental_v7 address.
	ListenMsgpack string `toml:"listen_msgpack"`
	HTTP          string `toml:"http"`
	MasterID      string `toml:"master_id"`
}

// The slave protocols the bench runs: Perspective Broker over TCP, and
// msgpack_experimental_v7 over a WebSocket.
const (
	PB      = "pb"
	Msgpack = "msgpack"
)

// Addrs are where our master listens: a slave protocol each, and HTTP.
type Addrs struct {
	PB, Msgpack, HTTP string
}

func (a Addrs) master() Master {
	return Master{Listen: a.PB, ListenMsgpack: a.Msgpack, HTTP: a.HTTP, MasterID: "bench"}
}

// Slave is one [[slaves]] entry.
type Slave struct {
	Name     string `toml:"name"`
	Password string `toml:"password,omitempty"`
	// PasswordFile is read instead of Password when set.
	PasswordFile string `toml:"password_file,omitempty"`
	MaxBuilds    int    `toml:"max_builds,omitempty"`
	// KeepaliveInterval is a Go duration ("60s"); empty for the default.
	KeepaliveInterval string `toml:"keepalive_interval,omitempty"`
}

// Builder is one [[builders]] entry.
type Builder struct {
	Name   string   `toml:"name"`
	Slaves []string `toml:"slaves"`
	Steps  []Step   `toml:"steps"`
}

// Step is one [[builders.steps]] entry: a shell step.
type Step struct {
	Name  string `toml:"name"`
	Shell string `toml:"shell"`
}

// Scheduler is one [[schedulers]] entry.
type Scheduler struct {
	Builder  string `toml:"builder"`
	Periodic string `toml:"periodic,omitempty"`
	AtStart  bool   `toml:"at_start,omitempty"`
}

// SlaveName is the name of the i-th slave, the same on both masters and in
// the load generator (its -prefix).
func SlaveName(i int) string { return fmt.Sprintf("%s%d", Prefix, i) }

// Prefix is the slave name prefix.
const Prefix = "s"

// Storm is the attach-storm configuration of our master: n slaves, all in
// one builder "b1" whose step runs `true`, no schedulers, both protocols
// on a.PB and a.Msgpack. The password is read from passwordFile, so the
// TOML file holds no secret. A keepalive interval of 0 leaves the slaves
// the master's default.
func Storm(a Addrs, n int, passwordFile string, keepalive time.Duration) Config {
	c := Config{Master: a.master()}
	b := Builder{Name: "b1", Steps: []Step{{Name: "true", Shell: "true"}}}
	ka := ""
	if keepalive > 0 {
		ka = keepalive.String()
	}
	for i := range n {
		c.Slaves = append(c.Slaves, Slave{Name: SlaveName(i), PasswordFile: passwordFile, KeepaliveInterval: ka})
		b.Slaves = append(b.Slaves, SlaveName(i))
	}
	c.Builders = []Builder{b}
	return c
}

// Throughput is the build-throughput configuration of our master: k
// slaves, builder "b<i>" on slave i alone, one step running `true`, no
// schedulers (the bench forces the builds over HTTP).
func Throughput(a Addrs, k int, passwordFile string) Config {
	c := Config{Master: a.master()}
	for i := range k {
		c.Slaves = append(c.Slaves, Slave{Name: SlaveName(i), PasswordFile: passwordFile, MaxBuilds: 1})
		c.Builders = append(c.Builders, Builder{Name: fmt.Sprintf("b%d", i), Slaves: []string{SlaveName(i)},
			Steps: []Step{{Name: "true", Shell: "true"}}})
	}
	return c
}

// TOML encodes c.
func (c Config) TOML() ([]byte, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Load reads a TOML file written by TOML. Keys it does not know are an
// error, so a generator and the reader cannot drift apart unnoticed.
func Load(path string) (Config, error) {
	var c Config
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, err
	}
	if u := md.Undecoded(); len(u) > 0 {
		return c, fmt.Errorf("%s: unknown keys %v", path, u)
	}
	return c, nil
}

// ReadPassword returns s's password, reading PasswordFile if set.
func (s Slave) ReadPassword() (string, error) {
	if s.PasswordFile == "" {
		return s.Password, nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	return strings.TrimRight(string(b), "\r\n"), err
}

// StockMode selects the stock master's builders and schedulers.
type StockMode int

const (
	// StockStorm: n workers, one builder "b1" on all of them, whose
	// only scheduler is a Triggerable nothing triggers.
	StockStorm StockMode = iota
	// StockThroughput: builder "b<i>" on worker i alone, each build runs
	// `true` and then triggers the next build of its own builder, and a
	// Periodic scheduler per builder starts the first at once: k builds
	// always in flight, the stock master's own way of saying "force".
	StockThroughput
)

// Stock returns a stock Buildbot 3.7 master.cfg with n workers whose
// port for protocol (PB or Msgpack) is bound to 127.0.0.1:port. The
// workers' password is read from the file passwordFile when the master
// starts.
func Stock(mode StockMode, protocol string, port, n int, passwordFile string) ([]byte, error) {
	if protocol != PB && protocol != Msgpack {
		return nil, fmt.Errorf("benchcfg: unknown protocol %q", protocol)
	}
	var b bytes.Buffer
	err := stockCfg.Execute(&b, map[string]any{"Throughput": mode == StockThroughput, "PB": protocol == PB, "Port": port, "N": n,
		"Prefix": Prefix, "PasswordFile": pyString(passwordFile)})
	return b.Bytes(), err
}

// pyString quotes s as a Python string literal.
func pyString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}

var stockCfg = template.Must(template.New("master.cfg").Parse(`# Generated by github.com/buildslave/buildslave/bench.
from buildbot.plugins import schedulers, steps, util, worker
{{- if not .PB}}
from buildbot.worker.protocols.manager import msgpack as msgpack_manager

# Buildbot 3.7 takes a bare port for msgpack and listens on every
# interface: narrow its dispatcher to loopback.
_dispatcher_init = msgpack_manager.Dispatcher.__init__
def _loopback_dispatcher(self, config_portstr, portstr):
    _dispatcher_init(self, config_portstr, portstr)
    self.portstr = portstr + ':interface=127.0.0.1'
msgpack_manager.Dispatcher.__init__ = _loopback_dispatcher
{{- end}}

with open({{.PasswordFile}}) as f:
    PASSWORD = f.read().strip()
N = {{.N}}
NAMES = ['{{.Prefix}}%d' % i for i in range(N)]

c = BuildmasterConfig = {}
c['workers'] = [worker.Worker(name, PASSWORD) for name in NAMES]
{{- if .PB}}
c['protocols'] = {'pb': {'port': 'tcp:{{.Port}}:interface=127.0.0.1'}}
{{- else}}
c['protocols'] = {'msgpack_experimental_v7': {'port': {{.Port}}}}
{{- end}}
{{- if .Throughput}}
c['builders'] = []
c['schedulers'] = []
for i, name in enumerate(NAMES):
    f = util.BuildFactory()
    f.addStep(steps.ShellCommand(name='true', command='true'))
    f.addStep(steps.Trigger(name='again', schedulerNames=['again%d' % i], waitForFinish=False))
    c['builders'].append(util.BuilderConfig(name='b%d' % i, workernames=[name], factory=f))
    c['schedulers'].append(schedulers.Triggerable(name='again%d' % i, builderNames=['b%d' % i]))
    c['schedulers'].append(schedulers.Periodic(name='first%d' % i, builderNames=['b%d' % i], periodicBuildTimer=86400))
{{- else}}
f = util.BuildFactory()
f.addStep(steps.ShellCommand(name='true', command='true'))
c['builders'] = [util.BuilderConfig(name='b1', workernames=NAMES, factory=f)]
# Buildbot refuses a builder no scheduler drives; this one never fires.
c['schedulers'] = [schedulers.Triggerable(name='never', builderNames=['b1'])]
{{- end}}
c['title'] = 'bench'
c['buildbotURL'] = 'http://127.0.0.1/'
c['db'] = {'db_url': 'sqlite:///state.sqlite'}
c['buildbotNetUsageData'] = None
`))
