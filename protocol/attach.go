package protocol

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/buildslave/buildslave/protocol/remote"
)

// attach runs the sequence the stock master runs before a slave takes
// builds, then registers the connection with the manager.
func (c *Conn) attach() error {
	defer c.endLogin() // if the sequence fails before Attach
	h := c.h
	ctx, cancel := context.WithTimeoutCause(c.Context(), orDefault(h.AttachTimeout, DefaultAttachTimeout),
		fmt.Errorf("attach sequence took longer than %v", orDefault(h.AttachTimeout, DefaultAttachTimeout)))
	defer cancel()
	if err := c.step(ctx, `print "attached"`, func(ctx context.Context) error { return c.Print(ctx, "attached") }); err != nil {
		return err
	}
	if err := c.step(ctx, "get_worker_info", func(ctx context.Context) error {
		result, err := c.w.Call(ctx, "get_worker_info", nil)
		if err != nil {
			return err
		}
		c.info, err = remote.ParseInfo(result)
		return err
	}); err != nil {
		return err
	}
	if err := c.step(ctx, "set_worker_settings", func(ctx context.Context) error {
		_, err := c.w.Call(ctx, "set_worker_settings", map[string]any{"args": h.Settings.args()})
		return err
	}); err != nil {
		return err
	}
	if err := c.makeBuilderDirs(ctx); err != nil {
		return err
	}
	err := h.Manager.Attach(ctx, c.name, c)
	c.endLogin()
	if err != nil {
		return &refusedError{err}
	}
	return c.step(ctx, `print "attached"`, func(ctx context.Context) error { return c.Print(ctx, "attached") })
}

// step runs one request of the attach sequence under StepTimeout.
func (c *Conn) step(ctx context.Context, name string, f func(context.Context) error) error {
	timeout := orDefault(c.h.StepTimeout, DefaultStepTimeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("no answer within %v", timeout))
	defer cancel()
	if err := f(ctx); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// makeBuilderDirs lists the slave's base directory and creates the builder
// directories missing from it.
func (c *Conn) makeBuilderDirs(ctx context.Context) error {
	if len(c.h.Builders) == 0 {
		return nil
	}
	sep := "/"
	if c.info.Extra["system"] == "nt" {
		sep = `\`
	}
	basedir := strings.TrimRight(c.info.Basedir, sep)
	var present []any
	err := c.step(ctx, "listdir", func(ctx context.Context) error {
		updates, err := c.run(ctx, remote.Request{Name: "listdir", Args: map[string]any{"path": c.info.Basedir}})
		for _, u := range updates {
			if u.Key == "files" {
				present, _ = u.Value.([]any)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	var paths []string
	for _, b := range c.h.Builders {
		if !slices.Contains(present, any(b)) {
			paths = append(paths, basedir+sep+b)
		}
	}
	if len(paths) == 0 {
		return nil
	}
	slices.Sort(paths)
	return c.step(ctx, "mkdir", func(ctx context.Context) error {
		_, err := c.run(ctx, remote.Request{Name: "mkdir", Args: map[string]any{"paths": paths}})
		return err
	})
}

// run runs a command to completion and returns its updates. It reads the
// connection itself meanwhile (the attach runs before the connection's
// reader), so the command's updates must fit their buffer.
func (c *Conn) run(ctx context.Context, req remote.Request) ([]remote.Update, error) {
	cmd, err := c.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := c.w.Wait(ctx, cmd.Done()); err != nil {
		return nil, err
	}
	var updates []remote.Update
	for u := range cmd.Updates() {
		updates = append(updates, u)
	}
	return updates, cmd.Wait(ctx)
}
