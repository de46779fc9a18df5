package builds

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
)

// errTooLarge is the failure of an upload over its step's max_upload_size.
var errTooLarge = errors.New("upload refused")

// upload is the file an upload step writes on the master: the command's
// Request.Upload. It takes at most max bytes whatever the slave sends,
// remembers the first failure (too large, or the disk's), and is removed
// unless the step succeeds.
type upload struct {
	path string
	max  int64

	mu     sync.Mutex // the connection's reader writes; the step ends it
	f      *os.File
	n      int64 // bytes written
	err    error // the first failure
	closed bool
}

// createUpload creates the file at path, and its directory, for at most
// max bytes.
func createUpload(path string, max int64) (*upload, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &upload{path: path, max: max, f: f}, nil
}

// Write writes p unless the file would grow past max or an earlier write
// failed.
func (u *upload) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.err != nil:
		return 0, u.err
	case u.n+int64(len(p)) > u.max:
		u.err = u.tooLarge()
		return 0, u.err
	}
	n, err := u.f.Write(p)
	u.n += int64(n)
	if err != nil {
		u.err = fmt.Errorf("upload failed: writing %s: %w", u.path, err)
	}
	return n, u.err
}

// tooLarge is errTooLarge for u.
func (u *upload) tooLarge() error {
	return fmt.Errorf("%w: %s is larger than max_upload_size (%s)", errTooLarge, filepath.Base(u.path), limit.Bytes(u.max))
}

// Close closes the file once the slave has sent it all; the protocol
// calls it.
func (u *upload) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.close()
}

func (u *upload) close() error {
	if u.closed {
		return u.err
	}
	u.closed = true
	if err := u.f.Close(); err != nil && u.err == nil {
		u.err = fmt.Errorf("upload failed: writing %s: %w", u.path, err)
	}
	return u.err
}

// end closes the file when the command has ended with rc and err, and
// removes it unless the upload succeeded. It returns the step's rc and
// error: the master's own failure wins over the slave's account of it,
// and a slave that stopped at maxsize (rc non-zero with max bytes sent)
// is reported as too large.
func (u *upload) end(rc int, err error) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.close()
	if u.err == nil && rc != 0 && u.n >= u.max {
		u.err = u.tooLarge()
	}
	if u.err != nil {
		err = fmt.Errorf("%w; the partial file was removed", u.err)
	}
	if err != nil || rc != 0 {
		_ = os.Remove(u.path) // a failed upload keeps no file; it may be gone already
	}
	return rc, err
}
