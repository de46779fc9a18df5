package config

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/digitalocean/go-libvirt/socket"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/buildslave/buildslave/docker"
	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/local"
	"github.com/buildslave/buildslave/libvirt"
	"github.com/buildslave/buildslave/slave"
)

// Latent is one latent slave of the file: its name, its entry as written
// (to tell a change on reconfiguration) and how to build its driver.
type Latent struct {
	Name  string
	Entry LatentEntry
	// Driver builds the latent slave's driver. Parse has built it once
	// already, to check it; a driver that holds a connection (libvirt)
	// is an io.Closer.
	Driver func(DriverEnv) (latent.LatentSlave, error)
}

// DriverEnv is what building a driver needs beyond the file.
type DriverEnv struct {
	// Master is the host:port Perspective Broker listens on: local slaves
	// dial it, and EC2 instances do unless master_address says otherwise.
	Master string
	// MasterMsgpack is the host:port msgpack listens on: local slaves dial
	// it with TLS when tls_cert is set (PB has no TLS here).
	MasterMsgpack string
	// Output receives local slaves' standard output and error.
	Output io.Writer
	Logger *slog.Logger
}

// slaves checks [[slaves]] and [[latent_slaves]].
func (c *Config) slaves(p *problems, ctx *parseContext, f File) {
	names := map[string]string{} // name → the entry that has it
	unique := func(e entry, name string) {
		if other, ok := names[name]; ok && name != "" {
			e.add("name", "%q is already the name of %s", name, other)
		}
		names[name] = e.path
	}
	for i, s := range f.Slaves {
		e := p.entry(fmt.Sprintf("slaves[%d]", i), s.Name)
		unique(e, s.Name)
		pw := e.secret(s.Secret, "password", true, ctx)
		opts := e.slaveOptions(s, slave.DefaultMissingTimeout)
		if pw == "" {
			continue // said already; slave.New would say it again
		}
		sl, err := slave.New(s.Name, pw, opts...)
		e.addErr("", err)
		if err == nil {
			c.Slaves = append(c.Slaves, sl)
		}
	}
	for i, l := range f.LatentSlaves {
		e := p.entry(fmt.Sprintf("latent_slaves[%d]", i), l.Name)
		unique(e, l.Name)
		if lt, ok := c.latent(e, ctx, l); ok {
			c.Latents = append(c.Latents, lt)
		}
	}
}

// slaveOptions are the options of a normal slave that the entry sets.
func (e entry) slaveOptions(s SlaveEntry, missingDefault time.Duration) []slave.Option {
	e.nonNegative("max_builds", s.MaxBuilds)
	return []slave.Option{
		slave.Properties(s.Properties),
		slave.MaxBuilds(s.MaxBuilds),
		slave.KeepaliveInterval(e.duration("keepalive_interval", s.KeepaliveInterval, slave.DefaultKeepaliveInterval, orNone)),
		slave.NotifyOnMissing(e.strings("notify_on_missing", s.NotifyOnMissing)...),
		slave.MissingTimeout(e.duration("missing_timeout", s.MissingTimeout, missingDefault, positive)),
	}
}

// latent checks one [[latent_slaves]] entry by building its driver.
func (c *Config) latent(e entry, ctx *parseContext, l LatentEntry) (Latent, bool) {
	pw := e.secret(l.Secret, "password", false, ctx)
	if pw == "" {
		pw = randomPassword()
	}
	opts := e.slaveOptions(l.SlaveEntry, latent.DefaultMissingTimeout)
	wait := e.duration("build_wait_timeout", l.BuildWaitTimeout, latent.DefaultBuildWaitTimeout, anySign)
	for _, k := range []struct {
		kind string
		set  bool
	}{{"local", l.Local != nil}, {"ec2", l.EC2 != nil}, {"libvirt", l.Libvirt != nil}, {"docker", l.Docker != nil}} {
		if kind := k.kind; k.set && kind != l.Kind {
			e.add(kind, "a [latent_slaves.%s] table for a slave of kind %q", kind, l.Kind)
		}
	}
	var build func(DriverEnv) (latent.LatentSlave, error)
	switch l.Kind {
	case "local":
		build = c.localDriver(e, ctx, l, pw, opts, wait)
	case "ec2":
		build = ec2Driver(e, ctx, l, pw, opts, wait)
	case "libvirt":
		build = libvirtDriver(e, ctx, l, pw, opts, wait)
	case "docker":
		build = dockerDriver(e, ctx, l, pw, opts, wait)
	case "":
		e.add("kind", `missing: "local", "ec2", "libvirt" or "docker"`)
	default:
		e.oneOf("kind", l.Kind, "local", "ec2", "libvirt", "docker")
	}
	if build == nil {
		return Latent{}, false
	}
	d, err := build(DriverEnv{Master: c.Listen, MasterMsgpack: c.ListenMsgpack, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		e.addErr(l.Kind, err)
		return Latent{}, false
	}
	if cl, ok := d.(io.Closer); ok {
		_ = cl.Close() // built only to be checked
	}
	return Latent{Name: l.Name, Entry: l, Driver: build}, true
}

// localDriver builds a local process driver: by default this master's own
// executable run as "slave" (the Go slave of package client).
func (c *Config) localDriver(e entry, ctx *parseContext, l LatentEntry, pw string, opts []slave.Option, wait time.Duration) func(DriverEnv) (latent.LatentSlave, error) {
	lc := LocalEntry{}
	if l.Local != nil {
		lc = *l.Local
	}
	program, args := ctx.path(lc.Program), lc.Args
	if program == "" {
		exe, err := os.Executable()
		if err != nil {
			e.add("local.program", "cannot find this master's executable (%v): give a slave program", err)
		}
		program, args = exe, append([]string{"slave"}, lc.Args...)
	}
	basedir := ctx.path(lc.Basedir)
	if basedir == "" {
		basedir = filepath.Join(c.Basedir, "slaves", l.Name)
	}
	env := lc.Env
	tls := c.TLSCert != ""
	if tls { // over msgpack, whose wss:// verifies the master
		env = append(env, "BUILDSLAVE_PROTOCOL=msgpack", "BUILDSLAVE_TLS=true", "BUILDSLAVE_CA="+c.TLSCert)
	}
	kill := e.duration("local.kill_timeout", lc.KillTimeout, 0, positive)
	return func(de DriverEnv) (latent.LatentSlave, error) {
		s, err := slave.New(l.Name, pw, opts...)
		if err != nil {
			return nil, err
		}
		master := de.Master
		if tls {
			master = de.MasterMsgpack
		}
		return local.New(local.Config{Slave: s, BuildWaitTimeout: wait, StopAfterEachBuild: wait == 0, Program: program, Args: args,
			Master: master, Basedir: basedir, Env: env, Output: de.Output, KillTimeout: kill})
	}
}

// ec2Driver builds an EC2 latent slave with every option the entry sets.
func ec2Driver(e entry, ctx *parseContext, l LatentEntry, pw string, opts []slave.Option, wait time.Duration) func(DriverEnv) (latent.LatentSlave, error) {
	if l.EC2 == nil {
		e.add("ec2", "missing: a slave of kind \"ec2\" needs a [latent_slaves.ec2] table with instance_type")
		return nil
	}
	x := *l.EC2
	o := []ec2.Option{ec2.SlaveOptions(opts...), ec2.BuildWaitTimeout(wait)}
	add := func(set bool, opt ec2.Option) {
		if set {
			o = append(o, opt)
		}
	}
	secret := e.secret(Secret{x.SecretIdentifier, x.SecretIdentifierFile, x.SecretIdentifierEnv}, "ec2.secret_identifier", false, ctx)
	add(x.AMI != "", ec2.AMI(x.AMI))
	add(len(x.ValidAMIOwners) > 0, ec2.ValidAMIOwners(x.ValidAMIOwners...))
	add(x.ValidAMILocationRegex != "", ec2.ValidAMILocationRegex(x.ValidAMILocationRegex))
	add(x.Identifier != "", ec2.Identifier(x.Identifier))
	add(secret != "", ec2.SecretIdentifier(secret))
	add(x.AWSIDFilePath != "", ec2.AWSIDFilePath(ctx.path(x.AWSIDFilePath)))
	add(x.ElasticIP != "", ec2.ElasticIP(x.ElasticIP))
	add(x.KeypairName != "", ec2.KeypairName(x.KeypairName))
	add(x.SecurityName != "", ec2.SecurityName(x.SecurityName))
	add(x.Region != "", ec2.Region(x.Region))
	add(x.Endpoint != "", ec2.Endpoint(x.Endpoint))
	add(x.SubnetID != "", ec2.SubnetID(x.SubnetID))
	add(len(x.SecurityGroupIDs) > 0, ec2.SecurityGroupIDs(x.SecurityGroupIDs...))
	add(x.InstanceProfile != "", ec2.InstanceProfile(x.InstanceProfile))
	add(x.UserData != "", ec2.UserData(x.UserData))
	add(len(x.Tags) > 0, ec2.Tags(x.Tags))
	add(len(x.BlockDeviceMap) > 0, ec2.BlockDeviceMappings(blockDevices(e, x.BlockDeviceMap)...))
	add(x.SpotInstance, ec2.SpotInstance(x.MaxSpotPrice))
	if !x.SpotInstance && x.MaxSpotPrice != 0 {
		e.add("ec2.max_spot_price", "set without spot_instance = true")
	}
	if d := e.duration("ec2.poll_interval", x.PollInterval, 0, positive); d > 0 {
		o = append(o, ec2.PollInterval(d))
	}
	if d := e.duration("ec2.stop_timeout", x.StopTimeout, 0, positive); d > 0 {
		o = append(o, ec2.StopTimeout(d))
	}
	e.nonNegative("ec2.retry_max_attempts", x.RetryMaxAttempts)
	if backoff := e.duration("ec2.retry_max_backoff", x.RetryMaxBackoff, 0, positive); x.RetryMaxAttempts > 0 || backoff > 0 {
		o = append(o, ec2.Retry(cmp.Or(x.RetryMaxAttempts, ec2.DefaultRetryMaxAttempts), cmp.Or(backoff, ec2.DefaultRetryMaxBackoff)))
	}
	return func(de DriverEnv) (latent.LatentSlave, error) {
		return ec2.New(l.Name, pw, x.InstanceType, append(o, ec2.MasterAddress(cmp.Or(x.MasterAddress, de.Master)), ec2.Logger(de.Logger))...)
	}
}

// libvirtDriver builds a libvirt latent slave with every option the entry
// sets.
func libvirtDriver(e entry, ctx *parseContext, l LatentEntry, pw string, opts []slave.Option, wait time.Duration) func(DriverEnv) (latent.LatentSlave, error) {
	if l.Libvirt == nil {
		e.add("libvirt", "missing: a slave of kind \"libvirt\" needs a [latent_slaves.libvirt] table with hd_image")
		return nil
	}
	v := *l.Libvirt
	o := []libvirt.Option{libvirt.SlaveOptions(opts...), libvirt.BuildWaitTimeout(wait)}
	if v.BaseImage != "" {
		o = append(o, libvirt.BaseImage(ctx.path(v.BaseImage)))
	}
	switch {
	case v.XML != "" && v.XMLFile != "":
		e.add("libvirt.xml", "give xml or xml_file, not both")
	case v.XMLFile != "":
		b, err := os.ReadFile(ctx.path(v.XMLFile))
		if err != nil {
			e.add("libvirt.xml_file", "%v", err)
		}
		o = append(o, libvirt.XML(string(b)))
	case v.XML != "":
		o = append(o, libvirt.XML(v.XML))
	}
	if v.URI != "" || v.Socket != "" {
		var d socket.Dialer // nil: the local socket
		if v.Socket != "" {
			d = dialers.NewLocal(dialers.WithSocket(v.Socket))
		}
		o = append(o, libvirt.Connection(cmp.Or(v.URI, libvirt.DefaultURI), d))
	}
	if len(v.GuestEnv) > 0 {
		o = append(o, libvirt.GuestEnv(v.GuestEnv...))
	}
	if d := e.duration("libvirt.shutdown_timeout", v.ShutdownTimeout, 0, nonNegative); d > 0 {
		o = append(o, libvirt.ShutdownTimeout(d))
	}
	return func(DriverEnv) (latent.LatentSlave, error) {
		return libvirt.New(l.Name, pw, ctx.path(v.HDImage), o...)
	}
}

// dockerDriver builds a Docker latent slave with every option the entry
// sets. Its build_wait_timeout defaults to Buildbot's for Docker, 0 (a
// container per build), and masterFQDN to the address local slaves dial,
// which a container on the host's network reaches.
func dockerDriver(e entry, ctx *parseContext, l LatentEntry, pw string, opts []slave.Option, wait time.Duration) func(DriverEnv) (latent.LatentSlave, error) {
	if l.Docker == nil {
		e.add("docker", "missing: a slave of kind \"docker\" needs a [latent_slaves.docker] table with image or dockerfile")
		return nil
	}
	x := *l.Docker
	dockerfile := x.Dockerfile
	if x.CustomContext {
		dockerfile = ctx.path(dockerfile) // the context archive
	}
	o := []docker.Option{docker.SlaveOptions(opts...), docker.Image(x.Image), docker.Command(x.Command...), docker.Volumes(x.Volumes...),
		docker.Dockerfile(dockerfile), docker.CustomContext(x.CustomContext), docker.Encoding(x.Encoding), docker.BuildArgs(x.BuildArgs),
		docker.Target(x.Target), docker.Version(x.Version), docker.FollowStartupLogs(x.FollowStartupLogs),
		docker.AutoPull(x.AutoPull), docker.AlwaysPull(x.AlwaysPull), docker.Hostname(x.Hostname)}
	if l.BuildWaitTimeout.raw != nil {
		o = append(o, docker.BuildWaitTimeout(wait))
	}
	if hc, err := docker.ParseHostConfig(x.HostConfig); err != nil {
		e.add("docker.hostconfig", "%v", err)
	} else {
		o = append(o, docker.WithHostConfig(hc))
	}
	if x.AllowPrivileged {
		o = append(o, docker.AllowPrivileged())
	}
	if t := x.TLS; t != nil {
		o = append(o, docker.WithTLS(docker.TLS{CAFile: ctx.path(t.CACert), CertFile: ctx.path(t.ClientCert), KeyFile: ctx.path(t.ClientKey)}))
	}
	return func(de DriverEnv) (latent.LatentSlave, error) {
		fqdn := x.MasterFQDN
		if fqdn == "" && !strings.HasSuffix(de.Master, ":0") { // port 0: Parse's check, before the port is chosen
			fqdn = de.Master
		}
		return docker.New(l.Name, pw, x.DockerHost, append(o, docker.MasterFQDN(fqdn), docker.Logger(de.Logger))...)
	}
}

// blockDevices converts block_device_map entries to the SDK's mappings.
func blockDevices(e entry, devs []BlockDevice) []types.BlockDeviceMapping {
	out := make([]types.BlockDeviceMapping, 0, len(devs))
	for i, d := range devs {
		field := fmt.Sprintf("ec2.block_device_map[%d]", i)
		if d.DeviceName == "" {
			e.add(field+".device_name", "missing")
		}
		m := types.BlockDeviceMapping{DeviceName: aws.String(d.DeviceName)}
		if d.VirtualName != "" {
			m.VirtualName = aws.String(d.VirtualName)
			out = append(out, m)
			continue
		}
		if d.VolumeSize < 0 || d.Iops < 0 {
			e.add(field, "volume_size and iops must not be negative")
		}
		ebs := &types.EbsBlockDevice{DeleteOnTermination: d.DeleteOnTermination}
		if d.VolumeSize > 0 {
			ebs.VolumeSize = aws.Int32(d.VolumeSize)
		}
		if d.VolumeType != "" {
			ebs.VolumeType = types.VolumeType(d.VolumeType)
		}
		if d.Iops > 0 {
			ebs.Iops = aws.Int32(d.Iops)
		}
		if d.SnapshotID != "" {
			ebs.SnapshotId = aws.String(d.SnapshotID)
		}
		if d.Encrypted {
			ebs.Encrypted = aws.Bool(true)
		}
		m.Ebs = ebs
		out = append(out, m)
	}
	return out
}
