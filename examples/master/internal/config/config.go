// Package config reads the example master's TOML configuration, reports
// every problem in it at once with its line, and turns it into the
// library's values: slave.Slave, latent drivers, notify.Mail, and the
// builders and schedules of package builds.
package config

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/buildslave/buildslave/cluster"
	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/internal/web"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/internal/guess"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/slave"
)

// Defaults of the [master] table.
const (
	// DefaultListen is where slaves attach over Perspective Broker, on
	// Buildbot's usual port: stock buildbot-workers need no flag for it.
	DefaultListen = "127.0.0.1:9989"
	// DefaultListenMsgpack is where slaves attach over msgpack.
	DefaultListenMsgpack = "127.0.0.1:9990"
	DefaultHTTP          = "127.0.0.1:8010"
	DefaultHistory       = 100
)

// Config is a valid configuration in the library's values.
type Config struct {
	File string // the file's name, for messages
	Raw  File   // as written, to tell what a reconfiguration changes

	Listen        string      // Perspective Broker's host:port
	ListenMsgpack string      // msgpack's host:port
	HTTP          string      // the web page's host:port
	TLS           *tls.Config // msgpack's: nil: ws://; else wss:// with this certificate
	TLSCert       string      // the certificate's file, for local slaves to trust
	LogJSON       bool
	Basedir       string // the master's directory: uploads/, local slaves' basedirs
	History       int    // how many builds the history keeps
	// StepOutput is how many bytes of each step's output the history
	// keeps.
	StepOutput  int
	BuildLimits builds.Limits // what builds may make the master hold
	PageBuilds  int           // builds a page of the status page shows
	Web         web.Config    // the web port's credentials and limits; Limits left to the caller
	// HTTPAllowUnauthenticated lets the web port listen beyond loopback
	// without credentials.
	HTTPAllowUnauthenticated bool

	Manager       slave.Config  // Logger left to the caller
	Lifecycle     latent.Config // MasterID and settings; Logger, Observe, Notifier left to the caller
	AttachTimeout time.Duration // protocol.Handler.AttachTimeout; 0: its default
	// MessageMemory is the size of the memory budget that the messages
	// of both slave transports share while read, decoded and handled.
	MessageMemory int64

	Slaves    []*slave.Slave // the static slaves
	Latents   []Latent
	Builders  []builds.Builder
	Schedules []builds.Schedule

	// Cluster is the [cluster] table as the library's value (ID,
	// Endpoints, Prefix, LeaseTTL, DialTimeout; Addrs and Logger left to
	// the caller); nil without one: this master is alone.
	Cluster *cluster.Config
}

// Load reads and checks the configuration file at path; relative paths in
// it are relative to its directory.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse checks the configuration in data, read from file, looking up
// password_env variables with lookup. Its error joins one *Problem per
// problem found.
func Parse(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var raw File
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		return nil, decodeError(file, err)
	}
	p := &problems{file: file, pos: scanPositions(string(data))}
	ctx := &parseContext{dir: filepath.Dir(file), lookup: lookup}
	p.unknownKeys(md.Undecoded())
	c := &Config{File: file, Raw: raw}
	c.master(p, ctx, raw.Master, len(raw.LatentSlaves) > 0 && raw.Cluster == nil)
	c.cluster(p, raw.Cluster, raw.Master)
	c.mail(p, ctx, raw.Mail)
	c.slaves(p, ctx, raw)
	c.builders(p, raw.Builders)
	c.schedules(p, raw.Schedulers)
	if err := errors.Join(p.list...); err != nil {
		return nil, err
	}
	return c, nil
}

// unknownKeys records a problem at each line that sets a key the format
// does not have, which is most often a misspelt one.
func (p *problems) unknownKeys(keys []toml.Key) {
	seen := map[string]bool{}
	for _, k := range keys {
		key := k.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		var paths []string
		for path := range p.pos {
			if withoutIndexes(path) == key {
				paths = append(paths, path)
			}
		}
		slices.SortFunc(paths, func(a, b string) int { return p.pos[a] - p.pos[b] })
		if len(paths) == 0 {
			paths = []string{key}
		}
		for _, path := range paths {
			p.list = append(p.list, &Problem{File: p.file, Line: p.pos.line(path), Field: path, Msg: "unknown key"})
		}
	}
}

// master checks the [master] table; needID: master_id is required (latent
// slaves, and no [cluster] to give a default id).
func (c *Config) master(p *problems, ctx *parseContext, m Master, needID bool) {
	e := p.entry("master", "")
	c.Listen = cmp.Or(m.Listen, DefaultListen)
	c.ListenMsgpack = cmp.Or(m.ListenMsgpack, DefaultListenMsgpack)
	c.HTTP = cmp.Or(m.HTTP, DefaultHTTP)
	if m.LogFormat != "" {
		e.oneOf("log_format", m.LogFormat, "text", "json")
	}
	c.LogJSON = m.LogFormat == "json"
	switch {
	case (m.TLSCert == "") != (m.TLSKey == ""):
		e.add("tls_cert", "give tls_cert and tls_key together")
	case m.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(ctx.path(m.TLSCert), ctx.path(m.TLSKey))
		if err != nil {
			e.add("tls_cert", "%v", err)
		}
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		c.TLSCert = ctx.path(m.TLSCert)
	}
	if m.MasterID == "" && needID {
		e.add("master_id", "required with latent_slaves: it tags their instances, and the reaper stops the untracked ones it tags")
	}
	c.Basedir = ctx.path(m.Basedir)
	if c.Basedir == "" {
		c.Basedir = filepath.Join(os.TempDir(), "buildslave-master-"+cmp.Or(m.MasterID, "default"))
	}
	e.nonNegative("max_starting", m.MaxStarting)
	e.nonNegative("max_running", m.MaxRunning)
	e.nonNegative("history", m.History)
	c.History = cmp.Or(m.History, DefaultHistory)
	c.Lifecycle = latent.Config{
		MasterID:      m.MasterID,
		MaxStarting:   m.MaxStarting,
		MaxRunning:    m.MaxRunning,
		ReapInterval:  e.duration("reap_interval", m.ReapInterval, 0, anySign),
		CheckInterval: e.duration("check_interval", m.CheckInterval, 0, positive),
		StopTimeout:   e.duration("stop_timeout", m.StopTimeout, 0, positive),
	}
	c.Manager = slave.Config{
		KeepaliveTimeout:     e.duration("keepalive_timeout", m.KeepaliveTimeout, 0, positive),
		DuplicatePingTimeout: e.duration("duplicate_ping_timeout", m.DuplicatePingTimeout, 0, positive),
	}
	c.AttachTimeout = e.duration("attach_timeout", m.AttachTimeout, 0, positive)
	c.MessageMemory = e.size("message_memory", m.MessageMemory, budget.DefaultSize)
	if c.MessageMemory < MinMessageMemory {
		e.add("message_memory", "must be at least 4MiB, which a stock slave's largest messages need while decoded, got %d", c.MessageMemory)
	}
	c.StepOutput = int(e.size("max_step_output", m.MaxStepOutput, builds.DefaultStepBytes))
	c.BuildLimits = builds.Limits{
		MaxUploadSize:    e.size("max_upload_size", m.MaxUploadSize, builds.DefaultMaxUploadSize),
		MaxPrintedOutput: e.size("max_printed_output", m.MaxPrintedOutput, builds.DefaultMaxPrintedOutput),
		MaxQueuedBuilds:  e.positive("max_queued_builds", m.MaxQueuedBuilds, builds.DefaultMaxQueuedBuilds),
		MaxReasonLength:  e.positive("max_reason_length", m.MaxReasonLength, builds.DefaultMaxReasonLength),
	}
	c.PageBuilds = e.positive("page_builds", m.PageBuilds, status.DefaultPageBuilds)
	c.Web = web.Config{
		Token:             e.httpToken(ctx, m.HTTPTokenFile),
		Users:             e.httpUsers(ctx, m.HTTPBasicAuthFile),
		Guesses:           guess.Config{Burst: m.HTTPAuthBurst},
		MaxBody:           e.size("http_max_body", m.HTTPMaxBody, web.DefaultMaxBody),
		MaxConnections:    e.positive("http_max_connections", m.HTTPMaxConnections, web.DefaultMaxConnections),
		ReadHeaderTimeout: e.duration("http_read_header_timeout", m.HTTPReadHeaderTimeout, web.DefaultReadHeaderTimeout, positive),
		ReadTimeout:       e.duration("http_read_timeout", m.HTTPReadTimeout, web.DefaultReadTimeout, positive),
		WriteTimeout:      e.duration("http_write_timeout", m.HTTPWriteTimeout, web.DefaultWriteTimeout, positive),
		IdleTimeout:       e.duration("http_idle_timeout", m.HTTPIdleTimeout, web.DefaultIdleTimeout, positive),
	}
	c.HTTPAllowUnauthenticated = m.HTTPAllowUnauthenticated
}

// MinMessageMemory is the least message_memory: a stock slave's largest
// messages (file blocks of 256 KiB, output batches of 64 KiB) need this
// much while decoded.
const MinMessageMemory = 4 << 20

// minTokenLength is the least length of http_token_file's token.
const minTokenLength = 16

// httpToken reads the web port's bearer token from file, if given.
func (e entry) httpToken(ctx *parseContext, file string) string {
	if file == "" {
		return ""
	}
	b, err := os.ReadFile(ctx.path(file))
	if err != nil {
		e.add("http_token_file", "%v", err)
		return ""
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minTokenLength || strings.ContainsAny(tok, " \t\r\n") {
		e.add("http_token_file", "%s: want one token of at least %d characters (such as the output of openssl rand -hex 16)", file, minTokenLength)
		return ""
	}
	return tok
}

// httpUsers reads the web port's basic auth users from file, if given:
// "user:password" lines; blank lines and lines starting with # are
// skipped.
func (e entry) httpUsers(ctx *parseContext, file string) map[string]string {
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(ctx.path(file))
	if err != nil {
		e.add("http_basic_auth_file", "%v", err)
		return nil
	}
	users := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, pw, ok := strings.Cut(line, ":")
		if !ok || user == "" || pw == "" {
			e.add("http_basic_auth_file", "%s:%d: want user:password", file, i+1)
			continue
		}
		users[user] = pw
	}
	if len(users) == 0 {
		e.add("http_basic_auth_file", "%s has no user:password line", file)
	}
	return users
}

// mail checks the [mail] table; without one, missing-slave mail goes out
// through notify.Default(), as Buildbot 0.8.6's manual promises. The
// example master sends no build mail, so the MailNotifier's builders
// filter is refused rather than accepted and ignored.
func (c *Config) mail(p *problems, ctx *parseContext, m *Mail) {
	if m == nil {
		return
	}
	e := p.entry("mail", "")
	mail := &notify.Mail{
		FromAddr:  m.FromAddr,
		RelayHost: m.RelayHost,
		Username:  m.Username,
		Password:  e.secret(m.Secret, "password", false, ctx),
		StartTLS:  m.StartTLS,
		Timeout:   e.duration("timeout", m.Timeout, 0, positive),
	}
	if m.Builders != nil {
		e.add("builders", "the example master sends no build mail, so it has no builders filter (missing-slave mail never used it): remove the line")
	}
	if err := mail.Validate(); err != nil {
		e.addErr("", err)
	}
	c.Manager.Notifier = mail
}

// String describes the configuration in one line, for logs.
func (c *Config) String() string {
	return fmt.Sprintf("%s: %d slaves, %d latent slaves, %d builders, %d schedulers",
		c.File, len(c.Slaves), len(c.Latents), len(c.Builders), len(c.Schedules))
}
