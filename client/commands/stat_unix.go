//go:build linux || darwin || freebsd

package commands

import (
	"io/fs"
	"os"
	"syscall"
	"time"
)

// statPath returns Python's os.stat tuple: mode, ino, dev, nlink, uid, gid,
// size, atime, mtime, ctime (whole seconds).
func statPath(path string) ([][2]any, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	a, m, c := statTimes(&st)
	tuple := []any{int64(st.Mode), int64(st.Ino), int64(st.Dev), int64(st.Nlink), int64(st.Uid),
		int64(st.Gid), st.Size, a.Sec, m.Sec, c.Sec}
	return [][2]any{{"stat", tuple}}, nil
}

// atime is a file's last access time.
func atime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		a, _, _ := statTimes(st)
		return time.Unix(a.Unix())
	}
	return fi.ModTime()
}

// ctime is a file's last status change, in nanoseconds (0 if unknown).
func ctime(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		_, _, c := statTimes(st)
		return c.Nano()
	}
	return 0
}
