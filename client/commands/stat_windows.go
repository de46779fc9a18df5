package commands

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// statPath returns Python's os.stat tuple as Python builds it on Windows:
// mode, ino, dev, nlink, uid, gid, size, atime, mtime, ctime (whole
// seconds; ctime is the creation time). ino and dev are 0, nlink 1.
func statPath(path string) ([][2]any, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	d := fi.Sys().(*syscall.Win32FileAttributeData)
	tuple := []any{pyMode(fi), int64(0), int64(0), int64(1), int64(0), int64(0), fi.Size(),
		filetime(d.LastAccessTime).Unix(), fi.ModTime().Unix(), filetime(d.CreationTime).Unix()}
	return [][2]any{{"stat", tuple}}, nil
}

// pyMode is st_mode as Python makes it up on Windows: the file type, read
// for all, write unless read-only, execute for directories and programs.
func pyMode(fi fs.FileInfo) int64 {
	const sIFDIR, sIFREG = 0o040000, 0o100000
	mode := int64(fi.Mode().Perm() &^ 0o111)
	switch {
	case fi.IsDir():
		mode |= sIFDIR | 0o111
	case slices.Contains([]string{".exe", ".bat", ".cmd", ".com"}, strings.ToLower(filepath.Ext(fi.Name()))):
		mode |= sIFREG | 0o111
	default:
		mode |= sIFREG
	}
	return mode
}

func filetime(ft syscall.Filetime) time.Time { return time.Unix(0, ft.Nanoseconds()) }

// atime is a file's last access time.
func atime(fi os.FileInfo) time.Time {
	if d, ok := fi.Sys().(*syscall.Win32FileAttributeData); ok {
		return filetime(d.LastAccessTime)
	}
	return fi.ModTime()
}

// ctime is a file's creation time in nanoseconds, Windows having no
// status change time (0 if unknown).
func ctime(fi os.FileInfo) int64 {
	if d, ok := fi.Sys().(*syscall.Win32FileAttributeData); ok {
		return d.CreationTime.Nanoseconds()
	}
	return 0
}
