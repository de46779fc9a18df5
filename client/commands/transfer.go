package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// transfer holds the args common to the three file-transfer commands.
type transfer struct {
	path      string
	maxsize   int64 // < 0: no limit
	blocksize int
}

func parseTransfer(a argMap) (transfer, error) {
	if err := a.require("path", "blocksize"); err != nil {
		return transfer{}, err
	}
	path, err1 := a.string("path", "")
	maxsize, err2 := a.int("maxsize", -1)
	blocksize, err3 := a.int("blocksize", 0)
	if err := firstErr(err1, err2, err3); err != nil {
		return transfer{}, err
	}
	if blocksize <= 0 {
		return transfer{}, fmt.Errorf("blocksize %d is not positive", blocksize)
	}
	if maxsize < -1 {
		return transfer{}, fmt.Errorf("maxsize %d is negative", maxsize)
	}
	return transfer{path: path, maxsize: int64(maxsize), blocksize: blocksize}, nil
}

// finish reports the outcome of a transfer as the stock slave does: rc
// (1 for any trouble), then stderr's text. A truncation or an interrupt is
// no failure of the command; any other error is returned to become one.
func (t transfer) finish(j *job, stderr string, err error) error {
	rc := 0
	switch {
	case err == nil && stderr == "":
	case errors.Is(err, errTruncated):
		stderr, err = fmt.Sprintf("Maximum filesize reached, truncating file '%s'", t.path), nil
		rc = 1
	case errors.Is(err, errInterrupted):
		stderr, err = "", nil
		rc = 1
	default:
		rc = 1
	}
	j.out.send("rc", rc)
	if stderr != "" {
		j.out.write("stderr", "", []byte(stderr))
	}
	return err
}

// uploadFile is "upload_file": send a slave file to the master.
type uploadFile struct {
	transfer
	keepstamp bool
}

func parseUploadFile(a argMap) (runner, error) {
	t, err := parseTransfer(a)
	if err != nil {
		return nil, err
	}
	keep, err := a.bool("keepstamp", false)
	return &uploadFile{t, keep}, err
}

func (c *uploadFile) run(ctx context.Context, j *job) error {
	j.out.header("sending %s\n", c.path)
	f, fi, err := openRegular(c.path)
	if err != nil {
		closeErr := j.m.UploadFileClose(ctx)
		return c.finish(j, fmt.Sprintf("Cannot open file '%s' for upload", c.path), closeErr)
	}
	err = copyBlocks(j, c.maxsize, c.blocksize, readBlocks(f, c.blocksize),
		func(b []byte) error { return j.m.UploadFileWrite(ctx, b) })
	f.Close()
	closeErr := j.m.UploadFileClose(ctx)
	if err == nil {
		err = closeErr
	}
	if err == nil && c.keepstamp {
		err = j.m.UploadFileUtime(ctx, unixSeconds(atime(fi)), unixSeconds(fi.ModTime()))
	}
	return c.finish(j, "", err)
}

// openRegular opens path for reading if it is a regular file.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// downloadFile is "download_file": write a file the master sends.
type downloadFile struct {
	transfer
	mode *os.FileMode
}

func parseDownloadFile(a argMap) (runner, error) {
	t, err := parseTransfer(a)
	if err != nil {
		return nil, err
	}
	c := &downloadFile{transfer: t}
	if a["mode"] != nil {
		m, err := a.int("mode", 0)
		if err != nil {
			return nil, err
		}
		mode := os.FileMode(m) & os.ModePerm
		c.mode = &mode
	}
	return c, nil
}

func (c *downloadFile) run(ctx context.Context, j *job) error {
	f, err := c.create()
	if err != nil {
		_ = j.m.ReadFileClose(ctx) // the failure to report is the local one
		return c.finish(j, fmt.Sprintf("Cannot open file '%s' for download", c.path), nil)
	}
	err = copyBlocks(j, c.maxsize, c.blocksize,
		func(n int) ([]byte, error) { return j.m.ReadFile(ctx, n) },
		func(b []byte) error { _, err := f.Write(b); return err })
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if cerr := j.m.ReadFileClose(ctx); err == nil {
		err = cerr
	}
	return c.finish(j, "", err)
}

func (c *downloadFile) create() (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(c.path), 0o777); err != nil {
		return nil, err
	}
	f, err := os.Create(c.path)
	if err == nil && c.mode != nil {
		if err = f.Chmod(*c.mode); err != nil {
			f.Close()
		}
	}
	return f, err
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
