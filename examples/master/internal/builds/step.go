package builds

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/buildslave/buildslave/protocol/remote"
)

// interruptTimeout bounds the interrupt of a command whose build ends.
const interruptTimeout = 5 * time.Second

// uploadBlockSize is the size of an upload's chunks, as the stock master's.
const uploadBlockSize = 16 << 10

// remote runs a step's command on the slave and returns its exit code. The
// error says why the command could not run to its end: the build's cause
// (the slave lost, the build aborted), the slave's failure, or an upload
// file that could not be written.
func (r *Runner) remote(ctx context.Context, conn commandConn, b Builder, rec *record, st Step, sr *stepRecord) (int, error) {
	// Slave paths are POSIX paths, whatever the master runs on.
	workdir := path.Join(conn.Info().Basedir, b.Name, "build")
	req := remote.Request{Name: "shell", Builder: b.Name, Args: shellArgs(workdir, st)}
	var dest string
	if st.Upload != "" {
		dest = filepath.Join(r.cfg.UploadDir, fmt.Sprintf("%s-%d", b.Name, rec.ID), path.Base(st.Upload))
		if err := os.MkdirAll(filepath.Dir(dest), 0o750); err != nil {
			return -1, err
		}
		f, err := os.Create(dest)
		if err != nil {
			return -1, err
		}
		defer f.Close()
		src := st.Upload
		if !path.IsAbs(src) {
			src = path.Join(workdir, src)
		}
		req = remote.Request{Name: "upload_file", Builder: b.Name, Upload: f, Args: map[string]any{
			"path": src, "maxsize": nil, "blocksize": uploadBlockSize, "keepstamp": false}}
	}
	cmd, err := conn.Start(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return -1, context.Cause(ctx)
		}
		return -1, err
	}
	rc := -1
	for done := false; !done; {
		select {
		case u, ok := <-cmd.Updates():
			done = !ok
			rc = r.update(b, rec, sr, u, rc)
		case <-ctx.Done():
			ictx, cancel := context.WithTimeout(context.Background(), interruptTimeout)
			_ = cmd.Interrupt(ictx, context.Cause(ctx).Error()) // best effort: the slave may be gone
			cancel()
			done = true
		}
	}
	if err := cmd.Wait(ctx); err != nil {
		return rc, err
	}
	if dest != "" && rc == 0 {
		r.cfg.History.output(sr, fmt.Sprintf("uploaded %s to %s\n", st.Upload, dest))
	}
	return rc, nil
}

// update records one update of a step's command and returns the exit code
// known so far.
func (r *Runner) update(b Builder, rec *record, sr *stepRecord, u remote.Update, rc int) int {
	switch u.Key {
	case "rc":
		return u.RC
	case "header":
		r.cfg.History.output(sr, u.Text)
	case "stdout", "stderr":
		r.cfg.History.output(sr, u.Text)
		for line := range strings.Lines(u.Text) {
			r.cfg.Progress("%s #%d: %s | %s", b.Name, rec.ID, sr.Name, strings.TrimRight(line, "\r\n"))
		}
	}
	return rc
}

// shellArgs are the arguments of a shell step, with every key the stock
// buildbot-worker reads.
func shellArgs(workdir string, st Step) map[string]any {
	env := make(map[string]any, len(st.Env))
	for k, v := range st.Env {
		env[k] = v
	}
	return map[string]any{
		"workdir":         workdir,
		"command":         []any{"/bin/sh", "-c", st.Shell},
		"env":             env,
		"want_stdout":     true,
		"want_stderr":     true,
		"logfiles":        map[string]any{},
		"timeout":         max(1, int(st.Timeout.Seconds())),
		"maxTime":         nil,
		"sigtermTime":     nil,
		"usePTY":          false,
		"logEnviron":      false,
		"initial_stdin":   nil,
		"interruptSignal": "KILL",
	}
}
