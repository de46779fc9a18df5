package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// isErr tells whether err is libvirt's error number n.
func isErr(err error, n golibvirt.ErrorNumber) bool {
	var e golibvirt.Error
	return errors.As(err, &e) && e.Code == uint32(n)
}

// makeClone makes hd_image a fresh qcow2 copy-on-write clone of
// base_image, replacing a clone left behind by a crash. When base_image is
// a volume of an active storage pool and an active pool has hd_image's
// directory as its target, libvirt's storage API makes it (this works on
// remote hosts); otherwise, on a local connection only, qemu-img does.
func (s *Slave) makeClone(ctx context.Context) error {
	return s.conn.do(ctx, func(cl api) error {
		pool, inPool, err := poolOf(cl, filepath.Dir(s.hdImage))
		if err != nil {
			return err
		}
		if inPool {
			// Picks up a base copied in by hand, or a clone left by a crash.
			if err := cl.StoragePoolRefresh(pool, 0); err != nil {
				return err
			}
		}
		base, err := cl.StorageVolLookupByPath(s.baseImage)
		switch {
		case err == nil && inPool:
			return s.cloneVolume(cl, pool, base)
		case err != nil && !isErr(err, golibvirt.ErrNoStorageVol):
			return err
		case s.local:
			return s.cloneFile(ctx)
		case err != nil:
			return fmt.Errorf("base_image on a remote host must be a storage volume: %w", err)
		default:
			return fmt.Errorf("hd_image's directory %s is the target of no active storage pool, which a clone on a remote host needs", filepath.Dir(s.hdImage))
		}
	})
}

// cloneVolume creates hd_image in pool as a qcow2 volume backed by base.
func (s *Slave) cloneVolume(cl api, pool golibvirt.StoragePool, base golibvirt.StorageVol) error {
	x, err := cl.StorageVolGetXMLDesc(base, 0)
	if err != nil {
		return err
	}
	var bv libvirtxml.StorageVolume
	if err := bv.Unmarshal(x); err != nil {
		return fmt.Errorf("base_image's volume: %w", err)
	}
	if bv.Target == nil || bv.Target.Format == nil {
		return fmt.Errorf("libvirt does not know base_image %s's format", s.baseImage)
	}
	if old, err := cl.StorageVolLookupByPath(s.hdImage); err == nil {
		if err := cl.StorageVolDelete(old, 0); err != nil {
			return fmt.Errorf("removing the old clone: %w", err)
		}
	} else if !isErr(err, golibvirt.ErrNoStorageVol) {
		return err
	}
	v := libvirtxml.StorageVolume{
		Name:         filepath.Base(s.hdImage),
		Capacity:     bv.Capacity,
		Target:       &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"}},
		BackingStore: &libvirtxml.StorageVolumeBackingStore{Path: s.baseImage, Format: bv.Target.Format},
	}
	doc, err := v.Marshal()
	if err != nil {
		return err
	}
	_, err = cl.StorageVolCreateXML(pool, doc, 0)
	return err
}

// cloneFile runs qemu-img on this host.
func (s *Slave) cloneFile(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "--output=json", s.baseImage).Output()
	if err != nil {
		return fmt.Errorf("qemu-img info: %w", commandError(err))
	}
	var info struct{ Format string }
	if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
		return fmt.Errorf("qemu-img info %s: no format in its answer", s.baseImage)
	}
	if err := os.Remove(s.hdImage); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the old clone: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", s.baseImage, "-F", info.Format, s.hdImage).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img create: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func commandError(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

// removeClone deletes the clone at path: the storage volume, or on a local
// connection the file. A clone that is already gone is no error.
func (s *Slave) removeClone(ctx context.Context, path string) error {
	return s.conn.do(ctx, func(cl api) error {
		vol, err := cl.StorageVolLookupByPath(path)
		switch {
		case err == nil:
			return cl.StorageVolDelete(vol, 0)
		case !isErr(err, golibvirt.ErrNoStorageVol):
			return err
		case s.local:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
}

// poolOf finds the active storage pool whose target directory is dir.
func poolOf(cl api, dir string) (golibvirt.StoragePool, bool, error) {
	pools, _, err := cl.ConnectListAllStoragePools(1, golibvirt.ConnectListStoragePoolsActive)
	if err != nil {
		return golibvirt.StoragePool{}, false, err
	}
	for _, p := range pools {
		x, err := cl.StoragePoolGetXMLDesc(p, 0)
		if err != nil {
			return golibvirt.StoragePool{}, false, err
		}
		var sp libvirtxml.StoragePool
		if err := sp.Unmarshal(x); err != nil {
			return golibvirt.StoragePool{}, false, fmt.Errorf("storage pool %s: %w", p.Name, err)
		}
		if sp.Target != nil && sp.Target.Path != "" && filepath.Clean(sp.Target.Path) == dir {
			return p, true, nil
		}
	}
	return golibvirt.StoragePool{}, false, nil
}
