package libvirt

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/buildslave/buildslave/latent"
)

// Namespace is the XML namespace of the <metadata> element that tags
// every domain a Slave starts with the master and the slave it belongs to.
const Namespace = "https://github.com/buildslave/buildslave/libvirt"

// tag is the metadata element of a domain a Slave started:
//
//	<buildslave:instance xmlns:buildslave="https://github.com/buildslave/buildslave/libvirt"
//	    master="..." slave="..." started="2006-01-02T15:04:05.999999999Z" clone="/path"/>
type tag struct {
	XMLName xml.Name `xml:"buildslave:instance"`
	NS      string   `xml:"xmlns:buildslave,attr"`
	Master  string   `xml:"master,attr"`
	Slave   string   `xml:"slave,attr"`
	Started string   `xml:"started,attr"`
	Clone   string   `xml:"clone,attr,omitempty"` // the disk clone to delete at stop
}

func newTag(req latent.StartRequest, started time.Time, clone string) tag {
	return tag{NS: Namespace, Master: req.MasterID, Slave: req.Name, Started: started.UTC().Format(time.RFC3339Nano), Clone: clone}
}

// parseTag reads the element libvirt returns for our namespace.
func parseTag(s string) (tag, error) {
	var t struct {
		Master  string `xml:"master,attr"`
		Slave   string `xml:"slave,attr"`
		Started string `xml:"started,attr"`
		Clone   string `xml:"clone,attr"`
	}
	if err := xml.Unmarshal([]byte(s), &t); err != nil {
		return tag{}, fmt.Errorf("libvirt: unreadable buildslave metadata: %w", err)
	}
	return tag{NS: Namespace, Master: t.Master, Slave: t.Slave, Started: t.Started, Clone: t.Clone}, nil
}

func (t tag) startedAt() time.Time {
	at, _ := time.Parse(time.RFC3339Nano, t.Started)
	return at
}

// EnvDelivery hands the guest its settings for one start, as KEY=VALUE
// strings (BUILDSLAVE_NAME, BUILDSLAVE_PASSWORD and those of GuestEnv), by
// changing the domain definition that is about to be started. The
// definition is never logged, but libvirt users who may read the running
// domain's XML (virsh dumpxml) and host users who see QEMU's command line
// can read them: the password is good for this one start only.
type EnvDelivery func(dom *libvirtxml.Domain, env []string) error

// KernelCmdline appends env to the kernel command line of a domain that
// boots a kernel directly (<os><kernel>): the kernel hands KEY=VALUE
// parameters it does not know to init as its environment.
func KernelCmdline(dom *libvirtxml.Domain, env []string) error {
	if dom.OS == nil || dom.OS.Kernel == "" {
		return errors.New("the domain boots no kernel directly (<os><kernel>), so it has no kernel command line")
	}
	dom.OS.Cmdline = strings.TrimSpace(dom.OS.Cmdline + " " + strings.Join(env, " "))
	return nil
}

// SMBIOSOEMStrings adds env as SMBIOS OEM strings (type 11), which the
// guest reads with `dmidecode -t 11` as root.
func SMBIOSOEMStrings(dom *libvirtxml.Domain, env []string) error {
	var smbios *libvirtxml.DomainSysInfoSMBIOS
	for _, si := range dom.SysInfo {
		if si.SMBIOS != nil {
			smbios = si.SMBIOS
		}
	}
	if smbios == nil {
		dom.SysInfo = append(dom.SysInfo, libvirtxml.DomainSysInfo{SMBIOS: &libvirtxml.DomainSysInfoSMBIOS{}})
		smbios = dom.SysInfo[len(dom.SysInfo)-1].SMBIOS
	}
	if smbios.OEMStrings == nil {
		smbios.OEMStrings = &libvirtxml.DomainSysInfoOEMStrings{}
	}
	smbios.OEMStrings.Entry = append(smbios.OEMStrings.Entry, env...)
	if dom.OS == nil {
		dom.OS = &libvirtxml.DomainOS{}
	}
	dom.OS.SMBios = &libvirtxml.DomainSMBios{Mode: "sysinfo"}
	return nil
}

func defaultDelivery(dom *libvirtxml.Domain, env []string) error {
	if dom.OS != nil && dom.OS.Kernel != "" {
		return KernelCmdline(dom, env)
	}
	return SMBIOSOEMStrings(dom, env)
}

// checkEnv accepts KEY=VALUE without blanks or quotes, which a kernel
// command line could not carry.
func checkEnv(kv string) error {
	k, _, ok := strings.Cut(kv, "=")
	switch {
	case !ok || k == "":
		return fmt.Errorf("%q is not KEY=VALUE", k)
	case strings.ContainsAny(kv, " \t\r\n\"'\\"):
		return fmt.Errorf("the setting of %s contains blanks, quotes or backslashes", k)
	}
	return nil
}

// prepare turns dom into the definition of one start: its first disk is
// disk (with format, when known), it carries t as metadata, and env is
// delivered to the guest.
func (s *Slave) prepare(dom *libvirtxml.Domain, disk, format string, t tag, env []string) error {
	dom.Name = s.slave.Name()
	if err := setDisk(dom, disk, format); err != nil {
		return err
	}
	md, err := xml.Marshal(t)
	if err != nil {
		return err
	}
	if dom.Metadata == nil {
		dom.Metadata = &libvirtxml.DomainMetadata{}
	}
	dom.Metadata.XML += string(md)
	for _, kv := range env {
		if err := checkEnv(kv); err != nil {
			return fmt.Errorf("guest setting: %w", err)
		}
	}
	deliver := s.deliver
	if deliver == nil {
		deliver = defaultDelivery
	}
	if err := deliver(dom, env); err != nil {
		return fmt.Errorf("handing the guest its settings: %w", err)
	}
	return nil
}

// setDisk points the domain's first disk (device "disk") at path, so that
// the VM boots hd_image or its clone and nothing else (Buildbot's
// issue 7122).
func setDisk(dom *libvirtxml.Domain, path, format string) error {
	if dom.Devices != nil {
		for i := range dom.Devices.Disks {
			d := &dom.Devices.Disks[i]
			if d.Device != "" && d.Device != "disk" {
				continue
			}
			d.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}}
			d.BackingStore = nil
			if format != "" {
				if d.Driver == nil {
					d.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu"}
				}
				d.Driver.Type = format
			}
			return nil
		}
	}
	return fmt.Errorf("domain %q has no disk to boot hd_image %s from", dom.Name, path)
}
