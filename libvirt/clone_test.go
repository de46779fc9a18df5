package libvirt

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// qemuDomain is a small QEMU domain under software emulation; with an
// empty disk its firmware just keeps looking for something to boot.
func qemuDomain(name string) string {
	return fmt.Sprintf(`<domain type='qemu'><name>%s</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nonexistent'/><target dev='vda' bus='virtio'/></disk>
<memballoon model='none'/></devices></domain>`, name)
}

// tempPool makes a transient directory storage pool on l.
func tempPool(t *testing.T, l *golibvirt.Libvirt) string {
	t.Helper()
	dir := t.TempDir()
	pool, err := l.StoragePoolCreateXML(fmt.Sprintf(`<pool type='dir'><name>buildslave-test-%s</name><target><path>%s</path></target></pool>`, rand.Text()[:8], dir), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.StoragePoolDestroy(pool) })
	return dir
}

func TestCloneIsTheBootedDisk(t *testing.T) {
	l := admin(t, "qemu:///system")
	for _, c := range []struct {
		how string
		dir func(t *testing.T) string
	}{
		{"storage pool", func(t *testing.T) string { return tempPool(t, l) }},
		{"qemu-img", func(t *testing.T) string { return t.TempDir() }},
	} {
		t.Run(c.how, func(t *testing.T) {
			dir := c.dir(t)
			base, clone := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "clone.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", base, "16M")
			name := "buildslave-clone-" + strings.ReplaceAll(c.how, " ", "-")
			s := newSlave(t, name, clone, XML(qemuDomain(name)), BaseImage(base))

			// A clone left behind by a crash is replaced.
			if err := os.WriteFile(clone, []byte("stale"), 0o600); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			if err := s.makeClone(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: the clone took %v", c.how, time.Since(t0))
			_, err := l.StorageVolLookupByPath(clone)
			if inPool := err == nil; inPool != (c.how == "storage pool") {
				t.Errorf("the clone is a storage volume: %v (%v)", inPool, err)
			}

			t0 = time.Now()
			inst, err := s.Start(t.Context(), startRequest(name, "master-a"))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: qemu:///system Start (clone included) to running in %v", c.how, time.Since(t0))
			t.Cleanup(func() { s.Stop(t.Context(), inst) })
			live := liveDomain(t, l, name, 0)
			disk := live.Devices.Disks[0]
			if disk.Source.File.File != clone || disk.Driver.Type != "qcow2" {
				t.Errorf("the running domain's disk is %s (%s), want the clone", disk.Source.File.File, disk.Driver.Type)
			}
			if disk.BackingStore == nil || disk.BackingStore.Source == nil || disk.BackingStore.Source.File.File != base {
				t.Errorf("the clone's backing store is %+v, want the base", disk.BackingStore)
			}
			if info := qemuImg(t, "info", "-U", clone); !strings.Contains(info, "backing file: "+base) || !strings.Contains(info, "backing file format: qcow2") || !strings.Contains(info, "virtual size: 16 MiB") {
				t.Errorf("qemu-img info of the clone:\n%s", info)
			}
			if err := s.Check(t.Context(), inst); err != nil {
				t.Errorf("Check: %v", err)
			}
			if err := s.Stop(t.Context(), inst); err != nil {
				t.Fatal(err)
			}
			if _, ok := domainState(t, l, name); ok {
				t.Error("the domain is still there after Stop")
			}
			if _, err := os.Stat(clone); !os.IsNotExist(err) {
				t.Errorf("the clone is still there after Stop: %v", err)
			}
			if _, err := os.Stat(base); err != nil {
				t.Errorf("the base image: %v", err)
			}
		})
	}
}
