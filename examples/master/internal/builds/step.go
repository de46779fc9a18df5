package builds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/protocol/remote"
)

// interruptTimeout bounds the interrupt of a command whose build ends.
const interruptTimeout = 5 * time.Second

// uploadBlockSize is the size of an upload's chunks, as the stock master's.
const uploadBlockSize = 16 << 10

// remote runs a step's command on the slave and returns its exit code. The
// error says why the command could not run to its end: the build's cause
// (the slave lost, the build aborted), the slave's failure, or an upload
// the master refused or could not write.
func (bd *build) remote(ctx context.Context, conn commandConn, st Step, sr *stepRecord) (int, error) {
	r, b, rec := bd.r, bd.b, bd.rec
	// Slave paths are POSIX paths, whatever the master runs on.
	workdir := path.Join(conn.Info().Basedir, b.Name, "build")
	req := remote.Request{Name: "shell", Builder: b.Name, Args: shellArgs(workdir, st)}
	var up *upload
	if st.Upload != "" {
		max := cmp.Or(st.MaxUploadSize, r.cfg.Limits.MaxUploadSize)
		var err error
		up, err = createUpload(filepath.Join(r.cfg.UploadDir, fmt.Sprintf("%s-%d", b.Name, rec.ID), path.Base(st.Upload)), max)
		if err != nil {
			return -1, err
		}
		src := st.Upload
		if !path.IsAbs(src) {
			src = path.Join(workdir, src)
		}
		req = remote.Request{Name: "upload_file", Builder: b.Name, Upload: up, Args: map[string]any{
			"path": src, "maxsize": max, "blocksize": uploadBlockSize, "keepstamp": false}}
	}
	rc, err := bd.command(ctx, conn, sr, req)
	if up == nil {
		return rc, err
	}
	rc, err = up.end(rc, err)
	switch {
	case errors.Is(err, errTooLarge):
		r.cfg.LimitLog.Hit("max_upload_size", limit.Bytes(up.max), "upload refused", "builder", b.Name, "build", rec.ID, "step", st.Name)
	case err == nil && rc == 0:
		r.cfg.History.output(sr, fmt.Sprintf("uploaded %s to %s\n", st.Upload, up.path))
	}
	return rc, err
}

// command runs req on the slave and records its updates until it ends; it
// returns the exit code and why the command could not run to its end.
func (bd *build) command(ctx context.Context, conn commandConn, sr *stepRecord, req remote.Request) (int, error) {
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
			rc = bd.update(sr, u, rc)
		case <-ctx.Done():
			ictx, cancel := context.WithTimeout(context.Background(), interruptTimeout)
			_ = cmd.Interrupt(ictx, context.Cause(ctx).Error()) // best effort: the slave may be gone
			cancel()
			done = true
		}
	}
	return rc, cmd.Wait(ctx)
}

// update records one update of a step's command and returns the exit code
// known so far.
func (bd *build) update(sr *stepRecord, u remote.Update, rc int) int {
	switch u.Key {
	case "rc":
		return u.RC
	case "header", "stdout", "stderr":
		if bd.r.cfg.History.output(sr, u.Text) {
			bd.r.cfg.LimitLog.Hit("max_step_output", limit.Bytes(int64(bd.r.cfg.History.stepBytes)), "step output dropped from memory: the page keeps its tail",
				"builder", bd.b.Name, "build", bd.rec.ID, "step", sr.Name)
		}
		if u.Key != "header" {
			bd.print(sr.Name, u.Text)
		}
	}
	return rc
}

// print prints text, a step's output, as progress lines while the build
// has printed less than Limits.MaxPrintedOutput; it counts the rest for
// stepEnd.
func (bd *build) print(step, text string) {
	max := bd.r.cfg.Limits.MaxPrintedOutput
	for line := range strings.Lines(text) {
		n := int64(len(line))
		if bd.printed+n > max {
			if bd.hidden == 0 {
				bd.r.cfg.LimitLog.Hit("max_printed_output", limit.Bytes(max), "build output no longer printed",
					"builder", bd.b.Name, "build", bd.rec.ID, "step", step)
			}
			bd.printed = max // nothing more of this build is printed
			bd.hidden += n
			continue
		}
		bd.printed += n
		bd.r.cfg.Progress("%s #%d: %s | %s", bd.b.Name, bd.rec.ID, step, strings.TrimRight(line, "\r\n"))
	}
}

// stepEnd says how much of the step's output print did not print.
func (bd *build) stepEnd(step string) {
	if bd.hidden == 0 {
		return
	}
	bd.r.cfg.Progress("%s #%d: %s | ... %d bytes of output not shown (max_printed_output is %s; the status page keeps the last %s of each step)",
		bd.b.Name, bd.rec.ID, step, bd.hidden, limit.Bytes(bd.r.cfg.Limits.MaxPrintedOutput), limit.Bytes(int64(bd.r.cfg.History.stepBytes)))
	bd.hidden = 0
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
