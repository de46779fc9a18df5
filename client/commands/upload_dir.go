package commands

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// uploadDirectory is "upload_directory": send a directory to the master as
// a tar stream (gzip-compressed if asked), which the master unpacks. The
// archive is produced while it is sent, never stored.
type uploadDirectory struct {
	transfer
	gzip bool
}

func parseUploadDirectory(a argMap) (runner, error) {
	t, err := parseTransfer(a)
	if err != nil {
		return nil, err
	}
	compress, err := a.string("compress", "")
	switch compress {
	case "":
	case "gz":
		return &uploadDirectory{t, true}, err
	default: // "bz2": Go's library reads bzip2 but cannot write it
		return nil, fmt.Errorf("compress %q is not supported by this slave (use \"gz\" or none)", compress)
	}
	return &uploadDirectory{t, false}, err
}

var errStopped = errors.New("upload stopped")

func (c *uploadDirectory) run(ctx context.Context, j *job) error {
	j.out.header("sending %s\n", c.path)
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() { pw.CloseWithError(writeTar(pw, c.path, c.gzip)) })
	err := copyBlocks(j, c.maxsize, c.blocksize, readBlocks(pr, c.blocksize),
		func(b []byte) error { return j.m.UploadDirectoryWrite(ctx, b) })
	pr.CloseWithError(errStopped) // lets writeTar end if we stopped early
	wg.Wait()
	if err == nil {
		err = j.m.UploadDirectoryUnpack(ctx)
	}
	return c.finish(j, "", err)
}

// writeTar writes the tree under root to w, names relative to root.
func writeTar(w io.Writer, root string, compress bool) error {
	var zw *gzip.Writer
	if compress {
		zw = gzip.NewWriter(w)
		w = zw
	}
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		return addToTar(tw, path, filepath.ToSlash(rel), d)
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	return err
}

func addToTar(tw *tar.Writer, path, name string, d fs.DirEntry) error {
	fi, err := d.Info()
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(path); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if err := tw.WriteHeader(hdr); err != nil || !fi.Mode().IsRegular() {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(tw, f, hdr.Size)
	return err
}
