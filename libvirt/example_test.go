package libvirt_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"libvirt.org/go/libvirtxml"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/libvirt"
	"github.com/buildslave/buildslave/slave"
)

// The on-demand VM of Buildbot 0.8.6's manual: the slave and the domain are both called
// minion1, and every start boots a fresh clone of base_image written to
// minion1's disk, thrown away after the build.
//
//	c['slaves'] = [LibVirtBuildSlave('minion1', 'sekrit',
//	    '/home/buildbot/images/minion1', '/home/buildbot/images/base_image')]
func Example() {
	minion1, err := libvirt.New("minion1", "sekrit", "/home/buildbot/images/minion1",
		libvirt.BaseImage("/home/buildbot/images/base_image"))
	if err != nil {
		log.Fatal(err)
	}
	defer minion1.Close()
	fmt.Println(minion1)
	fmt.Println("build_wait_timeout:", minion1.BuildWaitTimeout())
	fmt.Println("missing_timeout:", minion1.Slave().MissingTimeout())
	// Output:
	// libvirt slave minion1 on qemu:///system
	// build_wait_timeout: 10m0s
	// missing_timeout: 20m0s
}

// A domain that is not predefined comes from XML, as with virsh define:
// it is created at every start and destroyed at every stop. The master
// wires the slave into a latent.Lifecycle, which starts it when a build
// wants it. test:///default is libvirtd's built-in fake hypervisor; this
// example is compiled but not run, as it needs a libvirtd to talk to.
func ExampleXML() {
	minion2, err := libvirt.New("minion2", "sekrit", "/images/minion2",
		libvirt.XML(`<domain type='test'><name>minion2</name><memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
  <devices><disk type='file' device='disk'><source file='/images/minion2'/><target dev='vda'/></disk></devices>
</domain>`),
		libvirt.Connection("test:///default", nil),
		libvirt.BuildWaitTimeout(0), // a fresh VM for every build
		libvirt.SlaveOptions(slave.MaxBuilds(1)))
	if err != nil {
		log.Fatal(err)
	}
	defer minion2.Close()

	m, err := slave.NewManager(slave.Config{}, minion2.Slave())
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	l, err := latent.New(m, latent.Config{MasterID: "master-1"}, minion2)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Shutdown(context.Background())
	// l.Acquire(ctx, "minion2") now starts minion2's domain and waits for its slave.
}

// New checks the settings without connecting to libvirtd, and names the
// offending option: here a domain XML for another domain.
func ExampleNew_invalid() {
	_, err := libvirt.New("minion3", "sekrit", "/images/minion3",
		libvirt.XML(`<domain type='kvm'><name>minion4</name></domain>`))
	fmt.Println(err)
	var ce *slave.ConfigError
	fmt.Println(errors.As(err, &ce), ce.Field)
	// Output:
	// slave "minion3": xml: the domain is named "minion4", not "minion3" like the slave
	// true xml
}

// A domain that does not boot a kernel directly gets its slave's settings
// as SMBIOS OEM strings, which a boot script in the guest reads with
// dmidecode -t 11: this is what a start adds to the domain it defines.
func ExampleSMBIOSOEMStrings() {
	dom := &libvirtxml.Domain{Type: "kvm", Name: "minion1"}
	err := libvirt.SMBIOSOEMStrings(dom, []string{
		"BUILDSLAVE_NAME=minion1", "BUILDSLAVE_PASSWORD=fresh-password", "BUILDSLAVE_MASTER=10.0.2.2:9989"})
	if err != nil {
		log.Fatal(err)
	}
	out, err := dom.Marshal()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out)
	// Output:
	// <domain type="kvm">
	//   <name>minion1</name>
	//   <sysinfo type="smbios">
	//     <oemStrings>
	//       <entry>BUILDSLAVE_NAME=minion1</entry>
	//       <entry>BUILDSLAVE_PASSWORD=fresh-password</entry>
	//       <entry>BUILDSLAVE_MASTER=10.0.2.2:9989</entry>
	//     </oemStrings>
	//   </sysinfo>
	//   <os>
	//     <smbios mode="sysinfo"></smbios>
	//   </os>
	// </domain>
}

// A domain that boots a kernel directly gets them on the kernel command
// line, which hands unknown KEY=VALUE parameters to init as its
// environment.
func ExampleKernelCmdline() {
	dom := &libvirtxml.Domain{Type: "kvm", Name: "minion1", OS: &libvirtxml.DomainOS{
		Kernel: "/images/vmlinuz", Initrd: "/images/initrd.img", Cmdline: "console=ttyS0"}}
	err := libvirt.KernelCmdline(dom, []string{"BUILDSLAVE_NAME=minion1", "BUILDSLAVE_PASSWORD=fresh-password"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(dom.OS.Cmdline)

	err = libvirt.KernelCmdline(&libvirtxml.Domain{Name: "minion2"}, nil)
	fmt.Println(err)
	// Output:
	// console=ttyS0 BUILDSLAVE_NAME=minion1 BUILDSLAVE_PASSWORD=fresh-password
	// the domain boots no kernel directly (<os><kernel>), so it has no kernel command line
}
