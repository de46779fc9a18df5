package commands

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// logPoll is how often a watched logfile is checked, as in the stock slave.
const logPoll = 2 * time.Second

// logfile is one entry of a shell command's logfiles arg.
type logfile struct {
	name   string
	path   string // relative to the working directory, or absolute
	follow bool   // only send what was added after the command started
}

// parseLogfiles reads {name: filename} or {name: {filename, follow}}.
func parseLogfiles(v any) ([]logfile, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("argument \"logfiles\": want a map, got %T", v)
	}
	var out []logfile
	for name, spec := range m {
		lf := logfile{name: name}
		if opts, ok := spec.(map[string]any); ok {
			a := argMap(opts)
			var err1, err2 error
			lf.path, err1 = a.string("filename", "")
			lf.follow, err2 = a.bool("follow", false)
			if err := firstErr(err1, err2); err != nil {
				return nil, fmt.Errorf("logfile %q: %w", name, err)
			}
		} else if s, ok := asString(spec); ok {
			lf.path = s
		}
		if lf.path == "" {
			return nil, fmt.Errorf("logfile %q: no filename", name)
		}
		out = append(out, lf)
	}
	return out, nil
}

// fileStamp tells whether a file changed since it was last looked at.
type fileStamp struct {
	exists      bool
	ctime, size int64
	mtime       time.Time
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{exists: true, ctime: ctime(fi), size: fi.Size(), mtime: fi.ModTime()}
}

// logWatcher sends what a process writes to one logfile as "log" updates.
// Like the stock slave it waits until the file differs from what it was
// when the command started, then reads it from the start (or, with follow,
// from the size it had then).
type logWatcher struct {
	logfile
	out      *output
	activity chan<- struct{}
	initial  fileStamp
	f        *os.File
	buf      []byte
}

func newLogWatcher(lf logfile, dir string, out *output, activity chan<- struct{}) *logWatcher {
	if !filepath.IsAbs(lf.path) {
		lf.path = filepath.Join(dir, lf.path)
	}
	return &logWatcher{logfile: lf, out: out, activity: activity, initial: stampOf(lf.path)}
}

// watch polls the file until stop is closed, then reads it one last time.
func (w *logWatcher) watch(stop <-chan struct{}) {
	t := time.NewTicker(logPoll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.poll()
		case <-stop:
			w.poll()
			if w.f != nil {
				w.f.Close()
			}
			return
		}
	}
}

func (w *logWatcher) poll() {
	if w.f == nil {
		st := stampOf(w.path)
		if st == w.initial {
			return
		}
		if !st.exists { // deleted: wait for the new one
			w.initial = st
			return
		}
		f, err := os.Open(w.path)
		if err != nil {
			return
		}
		if w.follow {
			if _, err := f.Seek(w.initial.size, io.SeekStart); err != nil {
				f.Close()
				return
			}
		}
		w.f, w.buf = f, make([]byte, 10000)
	}
	for {
		n, err := w.f.Read(w.buf)
		if n > 0 {
			ping(w.activity)
			w.out.write("log", w.name, w.buf[:n])
		}
		if err != nil || n == 0 {
			return
		}
	}
}
