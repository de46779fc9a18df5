// Package docker runs latent build slaves as Docker containers, a fresh one per start: Buildbot's DockerLatentWorker on the Docker Engine API.
//
// A Slave starts a container from an image (on the host, built from a
// dockerfile, or pulled with autopull), hands it Buildbot's environment
// convention (BUILDMASTER, BUILDMASTER_PORT, WORKERNAME, WORKERPASS) and
// ours (BUILDSLAVE_MASTER, BUILDSLAVE_NAME, BUILDSLAVE_PASSWORD), labels
// it with the master's id and the slave's name, and removes it with its
// anonymous volumes when the latent.Lifecycle stops it. The password, a
// fresh one per start, travels in the container's environment as in
// Buildbot: whoever may inspect containers on the Docker host (root, in
// effect) can read it. A stock buildbot-worker image works unchanged; so
// does a one-file image FROM scratch holding our static Go slave
// (examples/slave):
//
//	FROM scratch
//	COPY slave /slave
//	ENTRYPOINT ["/slave", "-basedir", "/build"]
//
// Options carry the names of Buildbot 3.7's DockerLatentWorker:
// docker_host (New's argument), image, dockerfile, custom_context,
// encoding, buildargs, target, command, volumes, hostconfig, autopull,
// alwaysPull, hostname, followStartupLogs, masterFQDN, version and tls,
// with its defaults (build_wait_timeout 0: a container per
// build).
//
// # Which client
//
// The package uses github.com/moby/moby/client, the Engine API client
// that the Moby project maintains as its own Go module with semantic
// versions (its types in github.com/moby/moby/api). The older import path
// github.com/docker/docker/client is the same code frozen at v28 as a
// "+incompatible" module without a go.mod of its own; new fixes and API
// versions land only in the moby/moby modules. The client negotiates the
// API version with the daemon (1.40 and up: Docker 19.03 and later,
// Debian's docker.io 20.10 included) unless Version fixes it.
package docker

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sync/singleflight"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// Defaults of a Docker latent slave.
const (
	// DefaultBuildWaitTimeout is Buildbot's for Docker: 0, a fresh
	// container for every build, as starting one is quick.
	DefaultBuildWaitTimeout = 0
	// DefaultMissingTimeout is how long a started container may take to
	// attach (missing_timeout).
	DefaultMissingTimeout = latent.DefaultMissingTimeout
	// DefaultMasterPort is BUILDMASTER_PORT when MasterFQDN names no
	// port: Buildbot's PB port.
	DefaultMasterPort = 9989
	// LogTailLines is how many of a dead container's last log lines
	// Check puts in its error.
	LogTailLines = 20
	// StartupLogLines bounds how many lines FollowStartupLogs logs per
	// container.
	StartupLogLines = 200
)

// Labels every container a Slave starts carries.
const (
	LabelMaster  = "org.buildslave.master"  // the master's id (latent.StartRequest.MasterID)
	LabelSlave   = "org.buildslave.slave"   // the slave's name
	LabelStarted = "org.buildslave.started" // when Start began, RFC 3339 with nanoseconds
)

// Slave is a Docker latent slave: Buildbot's DockerLatentWorker(name,
// password, docker_host, ...). Build one with New and Close it when done;
// its methods are safe for concurrent use.
type Slave struct {
	slave            *slave.Slave
	cfg              config
	buildWaitTimeout time.Duration
	masterHost       string
	masterPort       string
	log              *slog.Logger

	clientOnce sync.Once
	cli        *client.Client
	cliErr     error

	mu      sync.Mutex
	follows map[string]context.CancelFunc // container id → stop following its logs
	wg      sync.WaitGroup                // log followers
}

var (
	_ latent.LatentSlave    = (*Slave)(nil)
	_ latent.PasswordPasser = (*Slave)(nil)
	_ latent.Lister         = (*Slave)(nil)
	_ latent.Checker        = (*Slave)(nil)
)

type config struct {
	dockerHostURL     string // docker_host, or empty for the client's default
	image             string
	dockerfile        string
	customContext     bool
	encoding          string
	buildArgs         map[string]string
	target            string
	command           []string
	volumes           []string
	hostConfig        HostConfig
	allowPrivileged   bool
	autopull          bool
	alwaysPull        bool
	hostname          string
	followStartupLogs bool
	masterFQDN        string
	version           string
	tls               *TLS
	buildWaitTimeout  time.Duration
	logger            *slog.Logger
	slaveOpts         []slave.Option
}

// Option sets one of a Slave's optional settings.
type Option func(*config)

// Image is the image every container starts from (image=).
func Image(name string) Option { return func(c *config) { c.image = name } }

// Dockerfile builds the image when the Docker host lacks it
// (dockerfile=): the Dockerfile's text, or with CustomContext the path
// of a tar archive holding the whole build context. Without Image the
// image is tagged buildslave-NAME:HASH, HASH covering the Dockerfile, the
// build arguments and the target, so that a changed Dockerfile builds a
// new image and an unchanged one is built once. Concurrent starts of one
// image on one Docker host share one build.
func Dockerfile(textOrPath string) Option { return func(c *config) { c.dockerfile = textOrPath } }

// CustomContext makes Dockerfile the path of a tar archive holding the
// build context, Dockerfile included (custom_context=).
func CustomContext(on bool) Option { return func(c *config) { c.customContext = on } }

// Encoding is the custom context archive's compression (encoding=):
// "gzip" (Buildbot's default), "bzip2", "xz" or "identity"; the daemon
// reads any of them, so it is checked but not sent.
func Encoding(e string) Option { return func(c *config) { c.encoding = e } }

// BuildArgs are the image build's ARG values (buildargs=).
func BuildArgs(args map[string]string) Option { return func(c *config) { c.buildArgs = args } }

// Target is the stage of a multi-stage Dockerfile to build (target=).
func Target(stage string) Option { return func(c *config) { c.target = stage } }

// Command replaces the image's command (command=); the image's
// entrypoint stays.
func Command(argv ...string) Option { return func(c *config) { c.command = argv } }

// Volumes binds host paths or named volumes into the container
// (volumes=), each as "src:dst", "src:dst:ro" or "src:dst:rw".
func Volumes(v ...string) Option { return func(c *config) { c.volumes = append(c.volumes, v...) } }

// WithHostConfig sets the container's host settings (hostconfig=): network
// mode, memory and CPU limits, extra hosts and the rest of HostConfig's
// fields.
func WithHostConfig(hc HostConfig) Option { return func(c *config) { c.hostConfig = hc } }

// AllowPrivileged lets HostConfig.Privileged through: a privileged
// container is root on the Docker host, so New refuses one without it.
func AllowPrivileged() Option { return func(c *config) { c.allowPrivileged = true } }

// AutoPull pulls the image when the Docker host does not have it
// (autopull=); off by default, so a missing image fails the start.
func AutoPull(on bool) Option { return func(c *config) { c.autopull = on } }

// AlwaysPull pulls the image at every start even when the host has it
// (alwaysPull=); it takes effect with AutoPull only, as in Buildbot.
func AlwaysPull(on bool) Option { return func(c *config) { c.alwaysPull = on } }

// Hostname is the container's host name (hostname=); Docker picks one
// (the container id's start) if empty. Docker refuses it with the host's
// network mode, where the container has the host's name.
func Hostname(name string) Option { return func(c *config) { c.hostname = name } }

// FollowStartupLogs logs the container's output (followStartupLogs=),
// up to StartupLogLines lines, until it stops.
func FollowStartupLogs(on bool) Option { return func(c *config) { c.followStartupLogs = on } }

// MasterFQDN is the address the container dials to reach the master
// (masterFQDN=): "host" or "host:port"; BUILDMASTER and BUILDMASTER_PORT
// are taken from it. The default is this host's name and port 9989.
// With the default bridge network the master is the bridge's gateway
// (172.17.0.1 by default); with HostConfig.NetworkMode "host" it is
// 127.0.0.1.
func MasterFQDN(hostport string) Option { return func(c *config) { c.masterFQDN = hostport } }

// Version fixes the Engine API version (version=), such as "1.41";
// by default the client negotiates it with the daemon.
func Version(v string) Option { return func(c *config) { c.version = v } }

// TLS is how a tcp:// docker_host is reached over TLS (tls=): the CA that
// the daemon's certificate chains to and the client's own certificate
// and key, as PEM files. An empty field is left out.
type TLS struct {
	CAFile, CertFile, KeyFile string
}

// WithTLS talks to docker_host over TLS (tls=); New reads the files, so a
// missing or bad one is refused there.
func WithTLS(t TLS) Option { return func(c *config) { c.tls = &t } }

// BuildWaitTimeout sets how long an idle container is kept after its
// last build (build_wait_timeout=): 0, the default, removes it after each
// build; a negative value keeps it until the master shuts down.
func BuildWaitTimeout(d time.Duration) Option {
	return func(c *config) { c.buildWaitTimeout = d }
}

// Logger receives the driver's lines (pulls, startup logs); nil means
// slog.Default().
func Logger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// SlaveOptions applies options of a normal slave: slave.Properties,
// slave.MaxBuilds, slave.KeepaliveInterval, slave.NotifyOnMissing and
// slave.MissingTimeout (20 minutes by default for a Docker slave).
func SlaveOptions(opts ...slave.Option) Option {
	return func(c *config) { c.slaveOpts = append(c.slaveOpts, opts...) }
}

// New builds a Docker latent slave named name with password, whose
// containers run on dockerHost (docker_host=: "unix:///var/run/docker.sock",
// "tcp://host:2376"; empty means $DOCKER_HOST, else the local socket), and
// validates it; errors are *slave.ConfigError naming the field. New does
// not reach the daemon: the first Start, Stop, List or Check does.
func New(name, password, dockerHost string, opts ...Option) (*Slave, error) {
	c := config{buildWaitTimeout: DefaultBuildWaitTimeout}
	for _, o := range opts {
		o(&c)
	}
	sl, err := slave.New(name, password, append([]slave.Option{slave.MissingTimeout(DefaultMissingTimeout)}, c.slaveOpts...)...)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	bad := func(field, format string, args ...any) {
		errs = append(errs, &slave.ConfigError{Slave: name, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if dockerHost == "" {
		dockerHost = os.Getenv("DOCKER_HOST")
	}
	if dockerHost != "" {
		if u, err := client.ParseHostURL(dockerHost); err != nil {
			bad("docker_host", "%v", err)
		} else if !slices.Contains([]string{"unix", "tcp", "npipe", "http", "https"}, u.Scheme) {
			bad("docker_host", "%q: want unix://PATH or tcp://HOST:PORT", dockerHost)
		}
	}
	switch {
	case c.image == "" && c.dockerfile == "":
		bad("image", "give an image, a dockerfile or both")
	case c.customContext && c.dockerfile == "":
		bad("custom_context", "needs a dockerfile (the context archive's path)")
	case c.customContext:
		if _, err := os.Stat(c.dockerfile); err != nil {
			bad("dockerfile", "custom context: %v", err)
		}
	}
	if c.encoding != "" && !slices.Contains([]string{"gzip", "bzip2", "xz", "identity"}, c.encoding) {
		bad("encoding", "%q is not gzip, bzip2, xz or identity", c.encoding)
	}
	if c.image == "" {
		c.image = builtImageName(name, c.dockerfile, c.buildArgs, c.target)
	}
	for _, v := range c.volumes {
		if err := checkVolume(v); err != nil {
			bad("volumes", "%v", err)
		}
	}
	if err := c.hostConfig.check(); err != nil {
		bad("hostconfig", "%v", err)
	}
	if c.hostConfig.Privileged && !c.allowPrivileged {
		bad("hostconfig", "privileged containers are root on the Docker host: add AllowPrivileged() to mean it")
	}
	if c.hostname != "" && c.hostConfig.NetworkMode == "host" {
		bad("hostname", "Docker refuses a hostname with network mode host")
	}
	if c.alwaysPull && !c.autopull {
		bad("alwaysPull", "takes effect only with autopull")
	}
	host, port := c.masterFQDN, strconv.Itoa(DefaultMasterPort)
	if host == "" {
		host, _ = os.Hostname()
	} else if h, p, err := net.SplitHostPort(host); err == nil {
		host, port = h, p
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		bad("masterFQDN", "bad port %q", port)
	}
	if host == "" || strings.ContainsAny(host, " /") {
		bad("masterFQDN", "%q is not a host name", host)
	}
	c.dockerHostURL = dockerHost
	switch {
	case c.tls != nil && !strings.HasPrefix(dockerHost, "tcp://"):
		bad("tls", "needs a tcp:// docker_host, not %q", dockerHost)
	case c.tls != nil: // the client reads the PEM files when it is made: make one to check them
		if cli, err := client.New(c.clientOptions()...); err != nil {
			bad("tls", "%v", err)
		} else {
			cli.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := c.logger
	if log == nil {
		log = slog.Default()
	}
	return &Slave{
		slave:            sl,
		cfg:              c,
		buildWaitTimeout: c.buildWaitTimeout,
		masterHost:       host,
		masterPort:       port,
		log:              log.With("slave", name),
		follows:          make(map[string]context.CancelFunc),
	}, nil
}

// Slave is the slave's configuration.
func (s *Slave) Slave() *slave.Slave { return s.slave }

// BuildWaitTimeout is how long an idle container is kept after its last
// build.
func (s *Slave) BuildWaitTimeout() time.Duration { return s.buildWaitTimeout }

// Close stops following startup logs and closes the client. It stops no
// container: the Lifecycle stops them before closing the driver.
func (s *Slave) Close() error {
	s.mu.Lock()
	for id, cancel := range s.follows {
		cancel()
		delete(s.follows, id)
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.clientOnce.Do(func() { s.cliErr = errors.New("docker: the Slave is closed") }) // none made after Close
	if s.cli != nil {
		return s.cli.Close()
	}
	return nil
}

// client returns the Engine API client, made on first use.
func (s *Slave) client() (*client.Client, error) {
	s.clientOnce.Do(func() {
		s.cli, s.cliErr = client.New(s.cfg.clientOptions()...)
		if s.cliErr != nil {
			s.cliErr = fmt.Errorf("docker: client for %s: %w", s.cfg.dockerHostURL, s.cliErr)
		}
	})
	return s.cli, s.cliErr
}

// clientOptions are the Engine API client's options: docker_host, tls
// and version.
func (c config) clientOptions() []client.Opt {
	var opts []client.Opt
	if c.dockerHostURL != "" {
		opts = append(opts, client.WithHost(c.dockerHostURL))
	}
	if c.tls != nil {
		opts = append(opts, client.WithTLSClientConfig(c.tls.CAFile, c.tls.CertFile, c.tls.KeyFile))
	}
	if c.version != "" {
		opts = append(opts, client.WithAPIVersion(c.version))
	}
	return opts
}

// imageWork shares the pulls and builds of an image among every Slave of
// this process that starts it on one Docker host at one time.
var imageWork singleflight.Group

// containerName is the container's name: like Buildbot's
// buildbot-NAME-HASH, with a hash of the master's id, so that two masters
// on one Docker host never collide.
func containerName(slaveName, masterID string) string {
	h := sha1.Sum([]byte(masterID))
	safe := strings.Map(func(r rune) rune { // Docker allows [a-zA-Z0-9_.-]
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, slaveName)
	return "buildslave-" + safe + "-" + hex.EncodeToString(h[:3])
}

// builtImageName is the tag of an image built from a dockerfile without
// an image name.
func builtImageName(slaveName, dockerfile string, args map[string]string, target string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q\x00%q\x00", dockerfile, target)
	for _, k := range slices.Sorted(maps.Keys(args)) {
		fmt.Fprintf(h, "%q=%q\x00", k, args[k])
	}
	repo := strings.ToLower(containerName(slaveName, "")) // lower case only in repositories
	repo = strings.TrimRight(repo[:strings.LastIndex(repo, "-")], "-.")
	return repo + ":" + hex.EncodeToString(h.Sum(nil))[:12]
}

// checkVolume checks a volumes= entry: src:dst[:ro|:rw].
func checkVolume(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return fmt.Errorf("%q is not src:dst[:ro]", v)
	}
	if !strings.HasPrefix(parts[1], "/") {
		return fmt.Errorf("%q: the container path must be absolute", v)
	}
	if len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw" {
		return fmt.Errorf("%q: mode %q is not ro or rw", v, parts[2])
	}
	return nil
}

// PassesPassword reports true: a container gets its start's password in
// WORKERPASS and BUILDSLAVE_PASSWORD, so only that password admits an
// attach while it starts.
func (s *Slave) PassesPassword() bool { return true }
