package libvirt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"

	"github.com/buildslave/buildslave/latent"
)

// libvirtdSocket is where .ci/libvirtd.sh's daemon listens.
const libvirtdSocket = "/var/run/libvirt/libvirt-sock"

// needLibvirtd skips the test when no libvirtd listens, or fails it when
// BUILDSLAVE_INTEGRATION=1 asks for every real peer.
func needLibvirtd(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(libvirtdSocket); err != nil {
		needOrSkip(t, "no libvirtd: %v (run .ci/libvirtd.sh to start one)", err)
	}
}

// needOrSkip skips the test for want of a real peer, or fails it when
// BUILDSLAVE_INTEGRATION=1.
func needOrSkip(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("BUILDSLAVE_INTEGRATION") == "1" {
		t.Fatalf("BUILDSLAVE_INTEGRATION=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// admin is the test's own connection to uri. For test:///default it also
// keeps the fake hypervisor's state alive, as libvirtd resets it when its
// last connection closes.
func admin(t *testing.T, uri string) *golibvirt.Libvirt {
	t.Helper()
	needLibvirtd(t)
	l := golibvirt.NewWithDialer(dialers.NewLocal())
	if err := l.ConnectToURI(golibvirt.ConnectURI(uri)); err != nil {
		t.Fatalf("connecting to %s: %v", uri, err)
	}
	t.Cleanup(func() { l.Disconnect() })
	return l
}

func newSlave(t *testing.T, name, hdImage string, opts ...Option) *Slave {
	t.Helper()
	s, err := New(name, "sekrit", hdImage, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startRequest(name, master string) latent.StartRequest {
	return latent.StartRequest{Name: name, Password: rand.Text(), MasterID: master}
}

// testDomain is a domain of libvirt's fake hypervisor.
func testDomain(name string) string {
	return fmt.Sprintf(`<domain type='test'><name>%s</name><memory unit='MiB'>64</memory><os><type>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/images/predefined.img'/><target dev='vda' bus='virtio'/></disk></devices></domain>`, name)
}

// liveDomain reads a running domain's definition.
func liveDomain(t *testing.T, l *golibvirt.Libvirt, name string, flags golibvirt.DomainXMLFlags) *libvirtxml.Domain {
	t.Helper()
	d, err := l.DomainLookupByName(name)
	if err != nil {
		t.Fatal(err)
	}
	x, err := l.DomainGetXMLDesc(d, flags)
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(x); err != nil {
		t.Fatal(err)
	}
	return &dom
}

func domainState(t *testing.T, l *golibvirt.Libvirt, name string) (golibvirt.DomainState, bool) {
	t.Helper()
	d, err := l.DomainLookupByName(name)
	if golibvirt.IsNotFound(err) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := l.DomainGetState(d, 0)
	if err != nil {
		t.Fatal(err)
	}
	return golibvirt.DomainState(st), true
}

func TestPredefinedDomain(t *testing.T) {
	l := admin(t, "test:///default")
	if _, err := l.DomainDefineXML(testDomain("minion1")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d, err := l.DomainLookupByName("minion1"); err == nil {
			l.DomainDestroy(d)
			l.DomainUndefine(d)
		}
	})
	dir := t.TempDir()
	base, clone := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "minion1.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", base, "16M")
	s := newSlave(t, "minion1", clone, Connection("test:///default", nil), BaseImage(base))
	req := startRequest("minion1", "master-a")
	t0 := time.Now()
	inst, err := s.Start(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test:///default: Start (with a qemu-img clone) to running in %v", time.Since(t0))
	if st, _ := domainState(t, l, "minion1"); st != golibvirt.DomainRunning {
		t.Fatalf("after Start the domain is %v", st)
	}
	live := liveDomain(t, l, "minion1", 0)
	if src := live.Devices.Disks[0].Source.File.File; src != clone {
		t.Errorf("the running domain's disk is %s, want the clone", src)
	}
	if oem := live.SysInfo; len(oem) == 0 || !slices.Contains(oem[0].SMBIOS.OEMStrings.Entry, "BUILDSLAVE_PASSWORD="+req.Password) {
		t.Errorf("the password did not reach the domain: %+v", oem)
	}
	if err := s.Check(t.Context(), inst); err != nil {
		t.Errorf("Check of a running domain: %v", err)
	}
	md, err := l.DomainGetMetadata(mustLookup(t, l, "minion1"), int32(golibvirt.DomainMetadataElement), golibvirt.OptString{Namespace}, 0)
	if err != nil || !strings.Contains(md, `master="master-a"`) || !strings.Contains(md, `slave="minion1"`) {
		t.Errorf("metadata %q, %v", md, err)
	}
	if src := liveDomain(t, l, "minion1", golibvirt.DomainXMLInactive).Devices.Disks[0].Source.File.File; src != "/images/predefined.img" {
		t.Errorf("the persistent definition changed: disk %s", src)
	}
	if err := s.Stop(t.Context(), inst); err != nil {
		t.Fatal(err)
	}
	if st, ok := domainState(t, l, "minion1"); !ok || st != golibvirt.DomainShutoff {
		t.Errorf("after Stop the predefined domain is %v (defined: %v), want shut off", st, ok)
	}
	if _, err := os.Stat(clone); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the clone is still there after Stop: %v", err)
	}
	if err := s.Check(t.Context(), inst); err == nil || !strings.Contains(err.Error(), "shutoff (destroyed)") {
		t.Errorf("Check of a stopped domain: %v", err)
	}

	// The same domain (and UUID) starts again: stopping the first
	// instance again leaves the second and its clone alone.
	inst2, err := s.Start(t.Context(), startRequest("minion1", "master-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(t.Context(), inst); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
	if st, _ := domainState(t, l, "minion1"); st != golibvirt.DomainRunning {
		t.Errorf("stopping an old instance stopped the new one: %v", st)
	}
	if _, err := os.Stat(clone); err != nil {
		t.Errorf("stopping an old instance removed the new one's clone: %v", err)
	}
	if err := s.Stop(t.Context(), inst2); err != nil {
		t.Fatal(err)
	}
}

func TestXMLDomainIsTransient(t *testing.T) {
	l := admin(t, "test:///default")
	s := newSlave(t, "minion2", "/images/minion2", Connection("test:///default", nil), XML(testDomain("minion2")))
	inst, err := s.Start(t.Context(), startRequest("minion2", "master-a"))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := domainState(t, l, "minion2"); st != golibvirt.DomainRunning {
		t.Fatalf("after Start the domain is %v", st)
	}
	if err := s.Stop(t.Context(), inst); err != nil {
		t.Fatal(err)
	}
	if _, ok := domainState(t, l, "minion2"); ok {
		t.Error("the transient domain is still there after Stop")
	}
	if err := s.Check(t.Context(), inst); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Check after Stop: %v", err)
	}

	// With a shutdown timeout, Stop asks the guest first.
	s = newSlave(t, "minion3", "/images/minion3", Connection("test:///default", nil), XML(testDomain("minion3")), ShutdownTimeout(10*time.Second))
	if inst, err = s.Start(t.Context(), startRequest("minion3", "master-a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(t.Context(), inst); err != nil {
		t.Fatal(err)
	}
	if _, ok := domainState(t, l, "minion3"); ok {
		t.Error("the transient domain is still there after a graceful Stop")
	}
}

func TestListFindsOnlyTaggedDomains(t *testing.T) {
	l := admin(t, "test:///default")
	// A domain nobody tagged, running beside ours.
	foreign, err := l.DomainCreateXML(testDomain("foreign"), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.DomainDestroy(foreign) })
	var started []latent.Instance
	for _, c := range []struct{ name, master string }{{"r1", "master-a"}, {"r2", "master-a"}, {"r3", "master-b"}} {
		s := newSlave(t, c.name, "/images/"+c.name, Connection("test:///default", nil), XML(testDomain(c.name)))
		inst, err := s.Start(t.Context(), startRequest(c.name, c.master))
		if err != nil {
			t.Fatal(err)
		}
		started = append(started, inst)
	}
	// After a crash, a new master process lists and reaps with a new Slave.
	reaper := newSlave(t, "r1", "/images/r1", Connection("test:///default", nil), XML(testDomain("r1")))
	got, err := reaper.List(t.Context(), "master-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].MasterID != "master-a" || got[1].MasterID != "master-a" {
		t.Fatalf("List(master-a) = %+v, want r1 and r2", got)
	}
	for _, inst := range got {
		if i := slices.IndexFunc(started, func(s latent.Instance) bool { return s.ID == inst.ID }); i < 0 || started[i].Slave != inst.Slave || !started[i].Started.Equal(inst.Started) {
			t.Errorf("listed %+v, started %+v", inst, started)
		}
		if err := reaper.Stop(t.Context(), inst); err != nil {
			t.Error(err)
		}
	}
	if got, err := reaper.List(t.Context(), "master-a"); err != nil || len(got) != 0 {
		t.Errorf("after reaping, List(master-a) = %+v, %v", got, err)
	}
	if got, err := reaper.List(t.Context(), "master-b"); err != nil || len(got) != 1 || got[0].Slave != "r3" {
		t.Errorf("List(master-b) = %+v, %v", got, err)
	}
	// Stop never touches a domain it did not tag.
	err = reaper.Stop(t.Context(), latent.Instance{ID: uuidString(foreign.UUID), Slave: "foreign", MasterID: "master-a"})
	if err == nil || !strings.Contains(err.Error(), "not ours") {
		t.Errorf("Stop of an untagged domain: %v", err)
	}
	if st, _ := domainState(t, l, "foreign"); st != golibvirt.DomainRunning {
		t.Errorf("the foreign domain is %v", st)
	}
	reaper.Stop(t.Context(), started[2])
}

func TestStartFailsAndLeavesNothing(t *testing.T) {
	l := admin(t, "test:///default")
	dir := t.TempDir()

	t.Run("rejected xml", func(t *testing.T) {
		bad := strings.Replace(testDomain("bad"), "bus='virtio'", "bus='nosuchbus'", 1)
		s := newSlave(t, "bad", filepath.Join(dir, "bad.qcow2"), Connection("test:///default", nil), XML(bad))
		_, err := s.Start(t.Context(), startRequest("bad", "master-a"))
		if err == nil || !strings.Contains(err.Error(), "nosuchbus") {
			t.Errorf("Start = %v, want libvirt's complaint about the bus", err)
		}
		if _, ok := domainState(t, l, "bad"); ok {
			t.Error("a domain was left behind")
		}
	})

	t.Run("rejected xml with a clone", func(t *testing.T) {
		base := filepath.Join(dir, "base.qcow2")
		qemuImg(t, "create", "-q", "-f", "qcow2", base, "16M")
		clone := filepath.Join(dir, "bad2.qcow2")
		bad := strings.Replace(testDomain("bad2"), "bus='virtio'", "bus='nosuchbus'", 1)
		s := newSlave(t, "bad2", clone, Connection("test:///default", nil), XML(bad), BaseImage(base))
		if _, err := s.Start(t.Context(), startRequest("bad2", "master-a")); err == nil || !strings.Contains(err.Error(), "nosuchbus") {
			t.Errorf("Start = %v, want libvirt's complaint about the bus", err)
		}
		if _, err := os.Stat(clone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the clone was left behind: %v", err)
		}
	})

	t.Run("missing base image", func(t *testing.T) {
		clone := filepath.Join(dir, "nobase.qcow2")
		s := newSlave(t, "nobase", clone, Connection("test:///default", nil), XML(testDomain("nobase")), BaseImage(filepath.Join(dir, "missing.qcow2")))
		_, err := s.Start(t.Context(), startRequest("nobase", "master-a"))
		if err == nil || !strings.Contains(err.Error(), "missing.qcow2") {
			t.Errorf("Start = %v, want an error naming the base image", err)
		}
		t.Log(err)
		if _, ok := domainState(t, l, "nobase"); ok {
			t.Error("a domain was left behind")
		}
		if _, err := os.Stat(clone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a clone was left behind: %v", err)
		}
	})

	t.Run("domain running outside our control", func(t *testing.T) {
		busy, err := l.DomainCreateXML(testDomain("busy"), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer l.DomainDestroy(busy)
		disk := filepath.Join(dir, "busy.qcow2")
		if err := os.WriteFile(disk, []byte("the running VM's disk"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := newSlave(t, "busy", disk, Connection("test:///default", nil), XML(testDomain("busy")), BaseImage(filepath.Join(dir, "base.qcow2")))
		_, err = s.Start(t.Context(), startRequest("busy", "master-a"))
		if err == nil || !strings.Contains(err.Error(), "already running") {
			t.Errorf("Start = %v, want a refusal", err)
		}
		t.Log(err)
		if st, _ := domainState(t, l, "busy"); st != golibvirt.DomainRunning {
			t.Errorf("the foreign domain is %v", st)
		}
		if b, _ := os.ReadFile(disk); string(b) != "the running VM's disk" {
			t.Error("the running VM's disk was overwritten")
		}
	})

	t.Run("undefined domain", func(t *testing.T) {
		s := newSlave(t, "nosuch", "/images/nosuch", Connection("test:///default", nil))
		if _, err := s.Start(t.Context(), startRequest("nosuch", "master-a")); err == nil || !strings.Contains(err.Error(), "no xml") {
			t.Errorf("Start = %v, want: no such domain", err)
		}
	})
}

// TestReconnectAfterDaemonRestart kills the libvirtd that .ci/libvirtd.sh
// started and starts it again with the script.
func TestReconnectAfterDaemonRestart(t *testing.T) {
	needLibvirtd(t)
	dir := os.Getenv("BUILDSLAVE_LIBVIRTD_DIR")
	if dir == "" {
		dir = "/run/buildslave-libvirtd"
	}
	pidFile := filepath.Join(dir, "libvirtd.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		needOrSkip(t, "no libvirtd started by .ci/libvirtd.sh: %v", err)
	}
	script, err := filepath.Abs("../.ci/libvirtd.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := newSlave(t, "phoenix", "/images/phoenix", Connection("test:///default", nil), XML(testDomain("phoenix")))
	inst, err := s.Start(t.Context(), startRequest("phoenix", "master-a"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("libvirtd (pid %d) did not exit", pid)
		}
	}
	// With the daemon down, calls fail (after their deadline) instead of hanging.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err = s.List(ctx, "master-a")
	cancel()
	if err == nil {
		t.Error("List with libvirtd down succeeded")
	}
	t.Logf("with libvirtd down: %v", err)
	restarted := time.Now()
	if out, err := exec.Command(script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	got, err := s.List(t.Context(), "master-a")
	if err != nil {
		t.Fatalf("List after the restart: %v", err)
	}
	t.Logf("reconnected %v after restarting libvirtd", time.Since(restarted))
	// libvirtd's fake hypervisor forgets its domains when it restarts.
	if len(got) != 0 {
		t.Errorf("List = %+v", got)
	}
	if err := s.Stop(t.Context(), inst); err != nil {
		t.Errorf("Stop of a domain the restart took away: %v", err)
	}
}

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustLookup(t *testing.T, l *golibvirt.Libvirt, name string) golibvirt.Domain {
	t.Helper()
	d, err := l.DomainLookupByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
