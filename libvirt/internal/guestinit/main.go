//go:build linux && amd64

// Command guestinit is the /init of the test VMs' initramfs: it brings up eth0 under QEMU's user-mode network, reports to the test and runs the Go slave.
//
// Its settings come from the kernel command line, which the kernel hands
// to init as its environment: BUILDSLAVE_NAME and BUILDSLAVE_PASSWORD (set
// by libvirt.Slave.Start), BUILDSLAVE_MASTER (the master's host:port),
// and BUILDSLAVE_REPORT, the host:port of a test listener that is told the
// guest kernel's release, the slave's name, the SHA-256 of the password
// (never the password) and the text at the start of the disk /dev/vda,
// on which init then writes BUILDSLAVE_DISK_MARK at 1 MiB. Init loads the
// kernel modules /modules/*.ko in the order of their names. When /slave
// exists, init then runs it as the slave. Init powers the VM off when it is
// done or when something fails.
//
// Run as "/init uname" (by a build's shell command, say), it prints the
// kernel's release, like uname -r, and exits: the guest has no other
// programs.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// sysFinitModule is finit_module(2) on amd64, which package syscall lacks.
const sysFinitModule = 313

// markOffset is where the guest writes BUILDSLAVE_DISK_MARK on its disk.
const markOffset = 1 << 20

const (
	disk    = "/dev/vda"
	iface   = "eth0"
	address = "10.0.2.15"
	netmask = "255.255.255.0"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "uname" {
		release, err := kernelRelease()
		if err != nil {
			fmt.Fprintln(os.Stderr, "uname:", err)
			os.Exit(1)
		}
		fmt.Println(release)
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "guestinit:", err)
	}
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() error {
	for _, m := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		os.MkdirAll(m.dir, 0o755)
		if err := syscall.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	modules, err := filepath.Glob("/modules/*.ko")
	if err != nil {
		return err
	}
	for _, m := range modules { // Glob sorts them
		if err := loadModule(m); err != nil {
			return err
		}
	}
	if err := configure(iface, address, netmask); err != nil {
		return err
	}
	if err := waitCarrier(iface, 30*time.Second); err != nil {
		return err
	}
	fmt.Println("guestinit: eth0 is up as", address)
	if addr := os.Getenv("BUILDSLAVE_REPORT"); addr != "" {
		if err := report(addr); err != nil {
			return err
		}
	}
	if _, err := os.Stat("/slave"); err != nil {
		return nil
	}
	os.MkdirAll("/build", 0o755)
	cmd := exec.Command("/slave")
	cmd.Env = append(os.Environ(), "BUILDSLAVE_BASEDIR=/build", "HOME=/build", "PATH=/")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	params := []byte{0}
	if _, _, e := syscall.Syscall(sysFinitModule, f.Fd(), uintptr(unsafe.Pointer(&params[0])), 0); e != 0 {
		return fmt.Errorf("finit_module %s: %w", path, e)
	}
	return nil
}

// ifreq is Linux's struct ifreq with a sockaddr_in or flags in its union.
type ifreq struct {
	name [16]byte
	data [24]byte
}

func ioctl(fd int, req uintptr, r *ifreq) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(r))); e != 0 {
		return e
	}
	return nil
}

func configure(name, addr, mask string) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var r ifreq
	copy(r.name[:], name)
	for _, set := range []struct {
		req uintptr
		ip  string
	}{{syscall.SIOCSIFADDR, addr}, {syscall.SIOCSIFNETMASK, mask}} {
		r.data = [24]byte{}
		binary.NativeEndian.PutUint16(r.data[0:], syscall.AF_INET)
		copy(r.data[4:8], net.ParseIP(set.ip).To4())
		if err := ioctl(fd, set.req, &r); err != nil {
			return fmt.Errorf("setting %s on %s: %w", set.ip, name, err)
		}
	}
	r.data = [24]byte{}
	if err := ioctl(fd, syscall.SIOCGIFFLAGS, &r); err != nil {
		return fmt.Errorf("flags of %s: %w", name, err)
	}
	flags := binary.NativeEndian.Uint16(r.data[0:]) | syscall.IFF_UP
	binary.NativeEndian.PutUint16(r.data[0:], flags)
	if err := ioctl(fd, syscall.SIOCSIFFLAGS, &r); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}

func waitCarrier(name string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile("/sys/class/net/" + name + "/carrier")
		if strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s has no link after %v", name, limit)
}

// kernelRelease is the running kernel's release, as uname -r prints it.
func kernelRelease() (string, error) {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "", err
	}
	var release []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		release = append(release, byte(c))
	}
	return string(release), nil
}

func report(addr string) error {
	release, err := kernelRelease()
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	marker, err := markDisk()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c, "uname=%s name=%s password-sha256=%x disk=%s\n", release, os.Getenv("BUILDSLAVE_NAME"), sha256.Sum256([]byte(os.Getenv("BUILDSLAVE_PASSWORD"))), marker)
	return err
}

// markDisk reads the text at the start of the disk and writes
// BUILDSLAVE_DISK_MARK.
func markDisk() (string, error) {
	var f *os.File
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if f, err = os.OpenFile(disk, os.O_RDWR|os.O_SYNC, 0); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 64)
	if _, err := f.ReadAt(head, 0); err != nil {
		return "", fmt.Errorf("reading %s: %w", disk, err)
	}
	if _, err := f.WriteAt([]byte(os.Getenv("BUILDSLAVE_DISK_MARK")), markOffset); err != nil {
		return "", fmt.Errorf("writing %s: %w", disk, err)
	}
	text, _, _ := strings.Cut(string(head), "\x00")
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' {
			return '?'
		}
		return r
	}, text), nil
}
