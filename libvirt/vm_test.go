package libvirt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// guestModules are the kernel modules the guest loads, in this order:
// virtio_blk for its disk and e1000 for its network.
var guestModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk", "e1000"}

// cacheDir holds what the VM test downloads, between runs.
func cacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "buildslave")
	}
	return "/var/cache/buildslave"
}

// guestKernel returns Debian's kernel and the guest's modules, from the
// cache or else from Debian's linux-image package.
func guestKernel(t *testing.T) (vmlinuz string, modules []string) {
	t.Helper()
	files := func(dir string) (string, []string) {
		var mods []string
		for _, m := range guestModules {
			mods = append(mods, filepath.Join(dir, m+".ko"))
		}
		return filepath.Join(dir, "vmlinuz"), mods
	}
	if dirs, _ := filepath.Glob(filepath.Join(cacheDir(), "linux-image-*-amd64")); len(dirs) > 0 {
		return files(dirs[len(dirs)-1])
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		needOrSkip(t, "apt-cache depends linux-image-amd64: %v", err)
	}
	var pkg string
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "linux-image-6.") && strings.HasSuffix(f, "-amd64") {
			pkg = f
		}
	}
	if pkg == "" {
		needOrSkip(t, "no linux-image-6.*-amd64 package in:\n%s", out)
	}
	tmp := t.TempDir()
	t0 := time.Now()
	download := exec.Command("apt-get", "download", pkg)
	download.Dir = tmp
	if out, err := download.CombinedOutput(); err != nil {
		needOrSkip(t, "apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download %s made %v", pkg, debs)
	}
	root := filepath.Join(tmp, "root")
	if out, err := exec.Command("dpkg", "-x", debs[0], root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -x: %v\n%s", err, out)
	}
	stage := filepath.Join(tmp, pkg)
	if err := os.Mkdir(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if strings.HasPrefix(name, "vmlinuz-") {
			name = "vmlinuz"
		} else if !strings.HasSuffix(name, ".ko") || !slices.Contains(guestModules, strings.TrimSuffix(name, ".ko")) {
			return nil
		}
		return os.Rename(path, filepath.Join(stage, name))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cacheDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(stage, filepath.Join(cacheDir(), pkg)); err != nil {
		t.Fatal(err)
	}
	t.Logf("fetched %s into %s in %v", pkg, cacheDir(), time.Since(t0))
	return files(filepath.Join(cacheDir(), pkg))
}

// goBuild builds a static binary of pkg.
func goBuild(t *testing.T, pkg, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// cpioFile is one entry of an initramfs.
type cpioFile struct {
	name         string
	mode         uint32 // type and permissions
	major, minor uint32 // of a device node
	data         []byte
}

// writeInitramfs writes files as an uncompressed cpio "newc" archive.
func writeInitramfs(t *testing.T, path string, files []cpioFile) {
	t.Helper()
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	for i, f := range append(files, cpioFile{name: "TRAILER!!!"}) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			i+1, f.mode, 0, 0, 1, 0, len(f.data), 0, 0, f.major, f.minor, len(f.name)+1, 0)
		b.WriteString(f.name)
		b.WriteByte(0)
		pad()
		b.Write(f.data)
		pad()
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRealVM boots a QEMU VM (software emulation) through a Slave: Debian's
// kernel, an initramfs whose init is internal/guestinit and whose slave
// is examples/slave, and a per-build clone of a base image as its disk.
// The guest reports to a listener of the test, then its slave attaches to
// a master (slave.Manager and protocol.Server) on the host's loopback,
// which QEMU's user-mode network shows the guest as 10.0.2.2.
func TestRealVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	l := admin(t, "qemu:///system")
	vmlinuz, modules := guestKernel(t)
	dir := tempPool(t, l)

	// The initramfs.
	bin := t.TempDir()
	goBuild(t, "./internal/guestinit", filepath.Join(bin, "init"))
	goBuild(t, "../examples/slave", filepath.Join(bin, "slave"))
	files := []cpioFile{
		{name: "dev", mode: 0o40755}, {name: "dev/console", mode: 0o20600, major: 5, minor: 1},
		{name: "init", mode: 0o100755, data: readFile(t, filepath.Join(bin, "init"))},
		{name: "slave", mode: 0o100755, data: readFile(t, filepath.Join(bin, "slave"))},
		{name: "modules", mode: 0o40755},
	}
	for i, m := range modules {
		files = append(files, cpioFile{name: fmt.Sprintf("modules/%02d-%s", i, filepath.Base(m)), mode: 0o100644, data: readFile(t, m)})
	}
	initrd := filepath.Join(bin, "initramfs.cpio")
	writeInitramfs(t, initrd, files)

	// The base image: a marker at its start.
	marker := "buildslave-base-" + rand.Text()[:10]
	raw, base, clone := filepath.Join(bin, "base.raw"), filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "vm1.qcow2")
	if err := os.WriteFile(raw, append([]byte(marker), make([]byte, 16<<20-len(marker))...), 0o644); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, "convert", "-q", "-O", "qcow2", raw, base)

	// The test's listener and the master.
	reports, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer reports.Close()
	name, master := "vm1", "master-vm"
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	console := filepath.Join(dir, "console.log")
	domXML := fmt.Sprintf(`<domain type='qemu'><name>%s</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel><initrd>%s</initrd><cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
<features><acpi/></features>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nowhere'/><target dev='vda' bus='virtio'/></disk>
<interface type='user'><model type='e1000'/><rom enabled='no'/></interface>
<serial type='file'><source path='%s'/><target port='0'/></serial><memballoon model='none'/></devices></domain>`, name, vmlinuz, initrd, console)
	diskMark := "guest-mark-" + rand.Text()[:10]
	const buildWait = 2 * time.Second
	s := &startRecorder{driver: newSlave(t, name, clone, XML(domXML), BaseImage(base), BuildWaitTimeout(buildWait), GuestEnv(
		"BUILDSLAVE_MASTER=10.0.2.2:"+portOf(ml.Addr()), "BUILDSLAVE_PROTOCOL=msgpack",
		"BUILDSLAVE_REPORT=10.0.2.2:"+portOf(reports.Addr()),
		"BUILDSLAVE_DISK_MARK="+diskMark)), started: make(chan latent.StartRequest, 1)}
	showConsole := func() {
		if b, err := os.ReadFile(console); err == nil {
			t.Logf("guest console:\n%s", b)
		}
	}

	// The master: a manager, the protocol on the host's loopback, and the
	// latent lifecycle that starts the VM when a build wants it.
	m, err := slave.NewManager(slave.Config{}, s.Slave())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv := &protocol.Server{Handler: &protocol.Handler{Manager: m}}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ml) }()
	defer func() { srv.Close(); <-served }()
	lc, err := latent.New(m, latent.Config{MasterID: master}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	t0 := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, name) // boots the VM; returns once its slave attached
	if err != nil {
		showConsole()
		t.Fatalf("no build slot on the VM: %v", err)
	}
	attached := time.Since(t0)
	req := <-s.started
	st, _ := lc.Status(name)
	if live := liveDomain(t, l, name, 0); live.Devices.Disks[0].Source.File.File != clone {
		t.Errorf("the VM's disk is %s, want the clone %s", live.Devices.Disks[0].Source.File.File, clone)
	}

	// The guest's report (it was sent before its slave attached): the disk
	// it booted is the clone of the base.
	reports.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := reports.Accept()
	if err != nil {
		t.Fatalf("no report from the guest: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	kernel := strings.TrimPrefix(filepath.Base(filepath.Dir(vmlinuz)), "linux-image-")
	want := fmt.Sprintf("uname=%s name=%s password-sha256=%x disk=%s\n", kernel, name, sha256.Sum256([]byte(req.Password)), marker)
	if line != want {
		t.Errorf("the guest reported %q, want %q", line, want)
	}

	// A shell command of the build runs inside the VM: it sees the guest's kernel.
	cmd, err := remote.Start(ctx, b.Conn(), remote.Request{Name: "shell", Args: map[string]any{
		"workdir": "/", "command": []any{"/init", "uname"}}})
	if err != nil {
		t.Fatal(err)
	}
	var out string
	for u := range cmd.Updates() {
		if u.Key == "stdout" {
			out += u.Text
		}
	}
	if err := cmd.Wait(ctx); err != nil {
		t.Fatalf("shell in the VM: %v", err)
	}
	if strings.TrimSpace(out) != kernel {
		t.Errorf("uname -r in the VM printed %q, want the guest kernel %q", out, kernel)
	}
	b.Release()
	released := time.Now()

	// build_wait_timeout after the build, the VM is destroyed and its clone deleted.
	for st, _ = lc.Status(name); st.State != latent.Stopped; st, _ = lc.Status(name) {
		if ctx.Err() != nil {
			t.Fatalf("the VM is still %v after the build", st.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if waited := time.Since(released); waited < buildWait {
		t.Errorf("stopped %v after the build, before build_wait_timeout (%v)", waited, buildWait)
	}
	t.Logf("qemu:///system: substantiate to attach %v; stopped %v after the build", attached, time.Since(released))
	if _, ok := domainState(t, l, name); ok {
		t.Error("the domain is still there after the stop")
	}
	if _, err := os.Stat(clone); !os.IsNotExist(err) {
		t.Errorf("the clone is still there after the stop: %v", err)
	}
	if bytes.Contains(readFile(t, console), []byte(req.Password)) {
		t.Error("the guest's console shows the password")
	}
	if bytes.Contains(readFile(t, base), []byte(diskMark)) {
		t.Error("the guest wrote on the base image")
	}
	if _, err := l.StorageVolLookupByPath(clone); !isErr(err, golibvirt.ErrNoStorageVol) {
		t.Errorf("the clone's volume: %v", err)
	}
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// startRecorder is a latent slave that tells the test each start's
// request (and so its fresh password). It keeps the driver's optional
// interfaces visible to the Lifecycle.
type startRecorder struct {
	driver
	started chan latent.StartRequest
}

// driver is what a *Slave is to the Lifecycle.
type driver interface {
	latent.LatentSlave
	latent.BuildWaiter
	latent.PasswordPasser
	latent.Lister
	latent.Checker
}

func (r *startRecorder) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	r.started <- req
	return r.driver.Start(ctx, req)
}

func portOf(a net.Addr) string { return fmt.Sprint(a.(*net.TCPAddr).Port) }
