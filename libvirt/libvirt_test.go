package libvirt

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name, hd string
		opts     []Option
		field    string
	}{
		{"", "/images/m", nil, "name"},
		{"a/b", "/images/m", nil, "name"},
		{"m", "", nil, "hd_image"},
		{"m", "images/m", nil, "hd_image"},
		{"m", "/images/m", []Option{BaseImage("base")}, "base_image"},
		{"m", "/images/m", []Option{BaseImage("/images/m")}, "base_image"},
		{"m", "/images/m", []Option{XML("<domain")}, "xml"},
		{"m", "/images/m", []Option{XML("<domain><name>other</name></domain>")}, "xml"},
		{"m", "/images/m", []Option{Connection("no uri", nil)}, "connection"},
		{"m", "/images/m", []Option{ShutdownTimeout(-1)}, "shutdown_timeout"},
		{"m", "/images/m", []Option{GuestEnv("NOEQUALS")}, "guest_env"},
		{"m", "/images/m", []Option{GuestEnv("K=two words")}, "guest_env"},
		{"m", "/images/m", []Option{SlaveOptions(slave.MaxBuilds(-1))}, "max_builds"},
	} {
		_, err := New(tc.name, "sekrit", tc.hd, tc.opts...)
		var ce *slave.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("New(%q, %q, ...) = %v, want a ConfigError for %s", tc.name, tc.hd, err, tc.field)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	s, err := New("minion1", "sekrit", "/home/buildbot/images/minion1", BaseImage("/home/buildbot/images/base_image"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.BuildWaitTimeout() != DefaultBuildWaitTimeout || s.Slave().MissingTimeout() != DefaultMissingTimeout || s.uri != DefaultURI || !s.local {
		t.Errorf("defaults: build_wait %v, missing %v, uri %s, local %v", s.BuildWaitTimeout(), s.Slave().MissingTimeout(), s.uri, s.local)
	}
	s2, err := New("m", "sekrit", "/i/m", SlaveOptions(slave.MissingTimeout(time.Minute)), BuildWaitTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	if s2.Slave().MissingTimeout() != time.Minute || s2.BuildWaitTimeout() != 0 {
		t.Errorf("options not applied: missing %v, build_wait %v", s2.Slave().MissingTimeout(), s2.BuildWaitTimeout())
	}
	if strings.Contains(s.String(), "sekrit") {
		t.Errorf("String shows the password: %s", s)
	}
}

const kernelDomain = `<domain type='qemu'><name>m</name><memory unit='MiB'>64</memory>
<metadata><other:x xmlns:other="urn:other"/></metadata>
<os><type>hvm</type><kernel>/k</kernel><cmdline>console=ttyS0</cmdline></os>
<devices><disk type='file' device='cdrom'><source file='/iso'/><target dev='hdc'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/base'/><target dev='vda' bus='virtio'/></disk></devices></domain>`

func TestPrepare(t *testing.T) {
	s, err := New("m", "sekrit", "/i/m", XML(kernelDomain), GuestEnv("BUILDSLAVE_MASTER=10.0.2.2:9989"))
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(kernelDomain); err != nil {
		t.Fatal(err)
	}
	req := latent.StartRequest{Name: "m", Password: "pw1", MasterID: "master-a"}
	started := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	tg := newTag(req, started, "/i/m")
	if err := s.prepare(&dom, "/i/m", "qcow2", tg, []string{"BUILDSLAVE_NAME=m", "BUILDSLAVE_PASSWORD=pw1", "BUILDSLAVE_MASTER=10.0.2.2:9989"}); err != nil {
		t.Fatal(err)
	}
	d := dom.Devices.Disks
	if d[0].Source.File.File != "/iso" || d[1].Source.File.File != "/i/m" || d[1].Driver.Type != "qcow2" {
		t.Errorf("disks: %+v %+v", d[0].Source.File, d[1].Source.File)
	}
	if want := "console=ttyS0 BUILDSLAVE_NAME=m BUILDSLAVE_PASSWORD=pw1 BUILDSLAVE_MASTER=10.0.2.2:9989"; dom.OS.Cmdline != want {
		t.Errorf("cmdline %q, want %q", dom.OS.Cmdline, want)
	}
	if !strings.Contains(dom.Metadata.XML, "urn:other") {
		t.Errorf("other metadata lost: %s", dom.Metadata.XML)
	}
	doc, err := dom.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// What libvirt hands back for our namespace is the element alone.
	i := strings.Index(doc, "<buildslave:instance")
	j := strings.Index(doc[i:], "/buildslave:instance>")
	if i < 0 || j < 0 {
		t.Fatalf("no tag in %s", doc)
	}
	got, err := parseTag(doc[i : i+j+len("/buildslave:instance>")])
	if err != nil || got != tg || !got.startedAt().Equal(started) {
		t.Errorf("tag %+v, %v; want %+v", got, err, tg)
	}
}

func TestPrepareOEMStrings(t *testing.T) {
	s, _ := New("m", "sekrit", "/i/m")
	dom := libvirtxml.Domain{Devices: &libvirtxml.DomainDeviceList{Disks: []libvirtxml.DomainDisk{{}}}}
	if err := s.prepare(&dom, "/i/m", "", tag{}, []string{"A=1"}); err != nil {
		t.Fatal(err)
	}
	if dom.OS.SMBios.Mode != "sysinfo" || dom.SysInfo[0].SMBIOS.OEMStrings.Entry[0] != "A=1" {
		t.Errorf("no OEM strings: %+v", dom.SysInfo)
	}
	if err := s.prepare(&libvirtxml.Domain{Name: "m"}, "/i/m", "", tag{}, nil); err == nil || !strings.Contains(err.Error(), "no disk") {
		t.Errorf("a domain without disk: %v", err)
	}
	if err := s.prepare(&dom, "/i/m", "", tag{}, []string{"BUILDSLAVE_PASSWORD=with space"}); err == nil || strings.Contains(err.Error(), "with space") {
		t.Errorf("a password with a blank: %v", err)
	}
}

func TestDescribeState(t *testing.T) {
	if got := describeState(int32(golibvirt.DomainShutoff), int32(golibvirt.DomainShutoffCrashed)); got != "shutoff (crashed)" {
		t.Errorf("describeState = %q", got)
	}
	u := golibvirt.UUID{0xdc, 0x22, 0x9f, 0x87, 0xd4, 0xde, 0x47, 0x19, 0x8c, 0xfd, 0x2e, 0x21, 0xc6, 0x10, 0x5b, 0x01}
	if s := uuidString(u); s != "dc229f87-d4de-4719-8cfd-2e21c6105b01" {
		t.Errorf("uuidString = %s", s)
	} else if back, err := parseUUID(s); err != nil || back != u {
		t.Errorf("parseUUID(%s) = %v, %v", s, back, err)
	}
}

// fakeClient is a connected client whose calls all fail the way a broken
// connection makes them fail; only its connection state is real.
type fakeClient struct {
	api
	once sync.Once
	gone chan struct{}
}

func (f *fakeClient) Disconnected() <-chan struct{} { return f.gone }
func (f *fakeClient) Disconnect() error             { f.once.Do(func() { close(f.gone) }); return nil }

func TestConnBackoffAndReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var dials []time.Time
		c := newConn("test:///default", nil)
		c.dial = func() (api, error) {
			dials = append(dials, time.Now())
			if len(dials) < 4 {
				return nil, errors.New("connection refused")
			}
			return &fakeClient{gone: make(chan struct{})}, nil
		}
		start := time.Now()
		cl, err := c.get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var waits []time.Duration
		for _, d := range dials[1:] {
			waits = append(waits, d.Sub(start))
		}
		if want := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond}; !slices.Equal(waits, want) {
			t.Errorf("dialled after %v, want %v", waits, want)
		}
		// A call interrupted by a lost connection fails clearly; the next one reconnects.
		err = c.do(t.Context(), func(api) error { cl.Disconnect(); return golibvirt.ErrInterrupted })
		if !errors.Is(err, ErrConnectionLost) {
			t.Errorf("interrupted call: %v, want ErrConnectionLost", err)
		}
		if err := c.do(t.Context(), func(api) error { return nil }); err != nil || len(dials) != 5 {
			t.Errorf("after the loss: %v after %d dials, want a 5th dial", err, len(dials))
		}
		// A caller's deadline ends the dialling.
		c.client.Disconnect()
		c.dial = func() (api, error) { return nil, errors.New("connection refused") }
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := c.get(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("get past the deadline: %v", err)
		}
		c.close()
		if _, err := c.get(t.Context()); !errors.Is(err, ErrClosed) {
			t.Errorf("get after close: %v", err)
		}
	})
}
