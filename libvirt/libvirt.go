// Package libvirt runs latent build slaves as libvirt domains: Buildbot 0.8.6's LibVirtBuildSlave on top of go-libvirt.
package libvirt

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// Defaults of a libvirt latent slave.
const (
	// DefaultURI is the libvirt URI a Slave opens unless Connection says otherwise.
	DefaultURI = "qemu:///system"
	// DefaultBuildWaitTimeout is how long an idle VM is kept after its
	// last build (build_wait_timeout).
	DefaultBuildWaitTimeout = latent.DefaultBuildWaitTimeout
	// DefaultMissingTimeout is how long a started VM may take to attach
	// (missing_timeout); it replaces the 1 h of a normal slave, as in
	// Buildbot's latent slaves.
	DefaultMissingTimeout = latent.DefaultMissingTimeout
)

// Slave is a libvirt latent slave: Buildbot 0.8.6's
// LibVirtBuildSlave(name, password, hd_image, base_image). Build one with
// New and Close it when done; its methods are safe for concurrent use.
type Slave struct {
	slave            *slave.Slave
	hdImage          string
	baseImage        string
	xml              string // the domain XML given with the XML option, or ""
	buildWaitTimeout time.Duration
	shutdownTimeout  time.Duration
	guestEnv         []string
	deliver          EnvDelivery
	uri              string
	local            bool // libvirtd runs on this host: clones may be made with qemu-img
	conn             *conn
}

var (
	_ latent.LatentSlave    = (*Slave)(nil)
	_ latent.PasswordPasser = (*Slave)(nil)
	_ latent.Lister         = (*Slave)(nil)
	_ latent.Checker        = (*Slave)(nil)
)

type config struct {
	baseImage        string
	xml              string
	uri              string
	dialer           socket.Dialer
	buildWaitTimeout time.Duration
	shutdownTimeout  time.Duration
	guestEnv         []string
	deliver          EnvDelivery
	slaveOpts        []slave.Option
}

// Option sets one of a Slave's optional settings.
type Option func(*config)

// BaseImage makes every start boot a fresh copy-on-write clone of base,
// written to hd_image and thrown away when the VM stops (base_image=).
func BaseImage(base string) Option { return func(c *config) { c.baseImage = base } }

// XML is the definition of a domain that is not predefined in libvirt
// (xml=): a transient domain is created from it at every start and
// destroyed at every stop. Its name, when set, must be the slave's.
func XML(domainXML string) Option { return func(c *config) { c.xml = domainXML } }

// Connection sets the libvirt URI to open (qemu:///system by default;
// test:///default for tests) and how to reach libvirtd: nil means the
// local socket /var/run/libvirt/libvirt-sock; go-libvirt's dialers reach
// remote hosts (dialers.NewRemote for TCP, dialers.NewTLS, dialers.NewSSH).
func Connection(uri string, d socket.Dialer) Option {
	return func(c *config) { c.uri, c.dialer = uri, d }
}

// BuildWaitTimeout sets how long an idle VM is kept after its last build
// (build_wait_timeout=): 0 stops it after each build, a negative value
// keeps it until the master shuts down.
func BuildWaitTimeout(d time.Duration) Option { return func(c *config) { c.buildWaitTimeout = d } }

// ShutdownTimeout makes Stop ask the guest to shut down (ACPI power
// button) and wait up to d before destroying the domain; 0, the default,
// destroys it at once, as the VM's disk is thrown away anyway.
func ShutdownTimeout(d time.Duration) Option { return func(c *config) { c.shutdownTimeout = d } }

// GuestEnv adds KEY=VALUE settings handed to the guest at every start,
// next to BUILDSLAVE_NAME and BUILDSLAVE_PASSWORD; for example
// "BUILDSLAVE_MASTER=10.0.2.2:9989" for the example slave.
func GuestEnv(kv ...string) Option {
	return func(c *config) { c.guestEnv = append(c.guestEnv, kv...) }
}

// Deliver sets how the guest settings reach the guest; by default
// KernelCmdline for a domain that boots a kernel directly and
// SMBIOSOEMStrings otherwise.
func Deliver(d EnvDelivery) Option { return func(c *config) { c.deliver = d } }

// SlaveOptions applies options of a normal slave: slave.Properties,
// slave.MaxBuilds, slave.KeepaliveInterval, slave.NotifyOnMissing and
// slave.MissingTimeout (20 minutes by default for a libvirt slave).
func SlaveOptions(opts ...slave.Option) Option {
	return func(c *config) { c.slaveOpts = append(c.slaveOpts, opts...) }
}

// New builds a libvirt latent slave named name (the slave's and the
// domain's name) with password, whose VM uses the disk image hdImage, and
// validates it; errors are *slave.ConfigError naming the field. New does
// not connect to libvirtd: the first Start, Stop, List or Check does.
func New(name, password, hdImage string, opts ...Option) (*Slave, error) {
	c := config{uri: DefaultURI, buildWaitTimeout: DefaultBuildWaitTimeout}
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
	if strings.Contains(name, "/") {
		bad("name", "must not contain '/' (it is the libvirt domain's name)")
	}
	switch {
	case hdImage == "":
		bad("hd_image", "must not be empty")
	case !filepath.IsAbs(hdImage):
		bad("hd_image", "must be an absolute path, got %q", hdImage)
	}
	if c.baseImage != "" {
		switch {
		case !filepath.IsAbs(c.baseImage):
			bad("base_image", "must be an absolute path, got %q", c.baseImage)
		case filepath.Clean(c.baseImage) == filepath.Clean(hdImage):
			bad("base_image", "must differ from hd_image (the clone is written there)")
		}
	}
	if c.xml != "" {
		var d libvirtxml.Domain
		if err := d.Unmarshal(c.xml); err != nil {
			bad("xml", "not a domain definition: %v", err)
		} else if d.Name != "" && d.Name != name {
			bad("xml", "the domain is named %q, not %q like the slave", d.Name, name)
		}
	}
	if u, err := url.Parse(c.uri); err != nil || u.Scheme == "" {
		bad("connection", "%q is not a libvirt URI", c.uri)
	}
	if c.shutdownTimeout < 0 {
		bad("shutdown_timeout", "must not be negative, got %v", c.shutdownTimeout)
	}
	for _, kv := range c.guestEnv {
		if err := checkEnv(kv); err != nil {
			bad("guest_env", "%v", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if c.dialer == nil {
		c.dialer = dialers.NewLocal()
	}
	_, local := c.dialer.(*dialers.Local)
	return &Slave{
		slave:            sl,
		hdImage:          filepath.Clean(hdImage),
		baseImage:        c.baseImage,
		xml:              c.xml,
		buildWaitTimeout: c.buildWaitTimeout,
		shutdownTimeout:  c.shutdownTimeout,
		guestEnv:         c.guestEnv,
		deliver:          c.deliver,
		uri:              c.uri,
		local:            local,
		conn:             newConn(c.uri, c.dialer),
	}, nil
}

// Slave is the slave's configuration.
func (s *Slave) Slave() *slave.Slave { return s.slave }

// BuildWaitTimeout is how long an idle VM is kept after its last build.
func (s *Slave) BuildWaitTimeout() time.Duration { return s.buildWaitTimeout }

// Close disconnects from libvirtd. It stops no VM: the Lifecycle stops
// them before closing the driver.
func (s *Slave) Close() error { return s.conn.close() }

// String names the slave and its libvirt URI; it never shows the password.
func (s *Slave) String() string { return fmt.Sprintf("libvirt slave %s on %s", s.slave.Name(), s.uri) }

// PassesPassword reports true: a domain gets its start's password in its
// SMBIOS OEM strings, so only that password admits an attach while it
// starts.
func (s *Slave) PassesPassword() bool { return true }
