package docker

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
)

// HostConfig is a container's host settings: Buildbot's hostconfig=,
// which docker-py's create_host_config reads. Zero fields are Docker's
// defaults.
type HostConfig struct {
	// NetworkMode is "bridge" (Docker's default), "host", "none",
	// "container:ID" or a network's name (network_mode).
	NetworkMode string
	// Memory caps the container's memory in bytes (mem_limit);
	// MemorySwap caps memory plus swap, -1 for unlimited swap
	// (memswap_limit).
	Memory, MemorySwap int64
	// CPUs caps the CPU time as a number of CPUs, 1.5 for one and a half
	// (nano_cpus / 1e9); CPUShares is the relative weight (cpu_shares);
	// CPUSetCPUs pins the container to CPUs, "0-1" (cpuset_cpus).
	CPUs       float64
	CPUShares  int64
	CPUSetCPUs string
	// ExtraHosts adds "name:address" lines to /etc/hosts (extra_hosts).
	ExtraHosts []string
	// DNS servers (dns).
	DNS []string
	// ShmSize is /dev/shm's size in bytes (shm_size).
	ShmSize int64
	// CapAdd and CapDrop add and drop kernel capabilities (cap_add,
	// cap_drop).
	CapAdd, CapDrop []string
	// Init runs docker-init as the container's pid 1, reaping zombies
	// (init); it needs docker-init on the Docker host. Buildbot turns it
	// on by default; here it is off unless set, as Debian's docker.io
	// ships no docker-init.
	Init bool
	// Privileged gives the container every capability and device
	// (privileged): New refuses it without AllowPrivileged.
	Privileged bool
}

// ParseHostConfig reads a hostconfig given as Buildbot's dictionary (as
// in a TOML or JSON configuration) with docker-py's key names:
// network_mode, mem_limit and memswap_limit (bytes, or "512m", "2g"),
// nano_cpus, cpu_shares, cpuset_cpus, extra_hosts (a list, or a table of
// name to address), dns, shm_size, cap_add, cap_drop, init, privileged. An
// unknown key is an error, not ignored.
func ParseHostConfig(m map[string]any) (HostConfig, error) {
	var hc HostConfig
	for k, v := range m {
		var err error
		switch k {
		case "network_mode":
			hc.NetworkMode, err = asString(v)
		case "mem_limit":
			hc.Memory, err = asBytes(v)
		case "memswap_limit":
			hc.MemorySwap, err = asBytes(v)
		case "nano_cpus":
			var n int64
			n, err = asInt(v)
			hc.CPUs = float64(n) / 1e9
		case "cpu_shares":
			hc.CPUShares, err = asInt(v)
		case "cpuset_cpus":
			hc.CPUSetCPUs, err = asString(v)
		case "extra_hosts":
			hc.ExtraHosts, err = asHosts(v)
		case "dns":
			hc.DNS, err = asStrings(v)
		case "shm_size":
			hc.ShmSize, err = asBytes(v)
		case "cap_add":
			hc.CapAdd, err = asStrings(v)
		case "cap_drop":
			hc.CapDrop, err = asStrings(v)
		case "init":
			hc.Init, err = asBool(v)
		case "privileged":
			hc.Privileged, err = asBool(v)
		default:
			err = fmt.Errorf("unknown key (known: network_mode, mem_limit, memswap_limit, nano_cpus, cpu_shares, cpuset_cpus, extra_hosts, dns, shm_size, cap_add, cap_drop, init, privileged)")
		}
		if err != nil {
			return HostConfig{}, fmt.Errorf("hostconfig %s: %w", k, err)
		}
	}
	return hc, hc.check()
}

// check validates what Docker would refuse later, at start.
func (hc HostConfig) check() error {
	switch {
	case hc.Memory < 0:
		return fmt.Errorf("memory %d is negative", hc.Memory)
	case hc.Memory > 0 && hc.Memory < 6<<20:
		return fmt.Errorf("memory %d is below Docker's minimum of 6 MiB", hc.Memory)
	case hc.MemorySwap < -1:
		return fmt.Errorf("memory swap %d is below -1", hc.MemorySwap)
	case hc.MemorySwap > 0 && hc.MemorySwap < hc.Memory:
		return fmt.Errorf("memory swap %d is below memory %d", hc.MemorySwap, hc.Memory)
	case hc.CPUs < 0 || math.IsNaN(hc.CPUs) || hc.CPUs > 1e6:
		return fmt.Errorf("cpus %v out of range", hc.CPUs)
	case hc.CPUShares < 0:
		return fmt.Errorf("cpu shares %d is negative", hc.CPUShares)
	case hc.ShmSize < 0:
		return fmt.Errorf("shm size %d is negative", hc.ShmSize)
	}
	for _, d := range hc.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return fmt.Errorf("dns %q is not an IP address", d)
		}
	}
	for _, h := range hc.ExtraHosts {
		if name, addr, ok := strings.Cut(h, ":"); !ok || name == "" || addr == "" {
			return fmt.Errorf("extra host %q is not name:address", h)
		}
	}
	return nil
}

// api is the Engine API's host config, with binds.
func (hc HostConfig) api(binds []string) *container.HostConfig {
	h := &container.HostConfig{
		Binds:       binds,
		NetworkMode: container.NetworkMode(hc.NetworkMode),
		ExtraHosts:  hc.ExtraHosts,
		ShmSize:     hc.ShmSize,
		CapAdd:      hc.CapAdd,
		CapDrop:     hc.CapDrop,
		Privileged:  hc.Privileged,
		Resources: container.Resources{
			Memory:     hc.Memory,
			MemorySwap: hc.MemorySwap,
			NanoCPUs:   int64(math.Round(hc.CPUs * 1e9)),
			CPUShares:  hc.CPUShares,
			CpusetCpus: hc.CPUSetCPUs,
		},
	}
	for _, d := range hc.DNS {
		h.DNS = append(h.DNS, netip.MustParseAddr(d)) // checked by check
	}
	if hc.Init {
		h.Init = &hc.Init
	}
	return h
}

func asString(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %T", v)
	}
	return s, nil
}

func asBool(v any) (bool, error) {
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("want true or false, got %T", v)
	}
	return b, nil
}

func asInt(v any) (int64, error) {
	switch n := v.(type) {
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	case float64:
		if n != math.Trunc(n) {
			return 0, fmt.Errorf("want a whole number, got %v", n)
		}
		return int64(n), nil
	}
	return 0, fmt.Errorf("want a number, got %T", v)
}

// asBytes reads a size in bytes, or as docker-py's "512m" / "2g".
func asBytes(v any) (int64, error) {
	if s, ok := v.(string); ok {
		return units.RAMInBytes(s)
	}
	return asInt(v)
}

func asStrings(v any) ([]string, error) {
	switch l := v.(type) {
	case []string:
		return l, nil
	case []any:
		out := make([]string, len(l))
		for i, e := range l {
			s, err := asString(e)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a list of strings, got %T", v)
}

// asHosts reads extra_hosts as a list of "name:address" or, as docker-py
// also takes it, a table of name to address.
func asHosts(v any) ([]string, error) {
	if m, ok := v.(map[string]any); ok {
		var out []string
		for name, a := range m {
			addr, err := asString(a)
			if err != nil {
				return nil, err
			}
			out = append(out, name+":"+addr)
		}
		slices.Sort(out)
		return out, nil
	}
	return asStrings(v)
}
