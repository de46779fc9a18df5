package libvirt_test

import (
	"context"
	"fmt"
	"log"

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
// wants it. This runs against libvirtd's built-in fake hypervisor.
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
