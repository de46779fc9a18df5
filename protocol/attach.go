package protocol

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/buildslave/buildslave/protocol/internal/attachtimer"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/protocol/wire"
)

// attach runs the sequence the stock master runs before a slave takes
// builds, then registers the connection with the manager. Its requests
// wait without a deadline of their own: a timer bounds each step by
// StepTimeout and the whole sequence by AttachTimeout, and closes the
// connection when one runs out, which fails the request waiting. The
// first three requests go out together (none needs another's answer),
// and what the master writes meanwhile waits for its next read
// (wire.Conn.Lead): the stock sequence's ten messages each way take the
// master four writes.
func (c *Conn) attach() error {
	defer c.finishLogin() // if the sequence fails before Attach
	h := c.h
	t := attachtimer.Start(orDefault(h.StepTimeout, DefaultStepTimeout), orDefault(h.AttachTimeout, DefaultAttachTimeout), func(cause error) { c.w.CloseWithCause(cause) })
	defer t.Stop()
	ctx := context.Background()
	first := []struct {
		step, op string
		fields   map[string]any
		got      func(result any) error
	}{
		{`print "attached"`, "print", map[string]any{"message": "attached"}, nil},
		{"get_worker_info", "get_worker_info", nil, func(result any) (err error) {
			c.info, err = remote.ParseInfo(result)
			return err
		}},
		{"set_worker_settings", "set_worker_settings", h.settings(), nil},
	}
	sent := make([]*wire.Pending, len(first))
	for i, r := range first {
		p, err := c.w.Send(r.op, r.fields)
		if err != nil {
			return fmt.Errorf("%s: %w", r.step, err)
		}
		sent[i] = p
	}
	for i, r := range first {
		if err := t.Step(r.step, func() error {
			result, err := sent[i].Wait(ctx)
			if err == nil && r.got != nil {
				err = r.got(result)
			}
			return err
		}); err != nil {
			return err
		}
	}
	if err := c.makeBuilderDirs(t); err != nil {
		return err
	}
	t.Rest() // the manager's check of a duplicate name
	err := h.Manager.Attach(c.Context(), c.name, c)
	c.finishLogin()
	if err != nil {
		return &refusedError{err}
	}
	return t.Step(`print "attached"`, func() error { return c.Print(ctx, "attached") })
}

// makeBuilderDirs creates the builder directories under the slave's base
// directory. The stock master lists the directory first and asks only for
// the missing ones; a slave's mkdir leaves existing directories alone, so
// asking for all of them saves the listing's round trip.
func (c *Conn) makeBuilderDirs(t *attachtimer.Timer) error {
	if len(c.h.Builders) == 0 {
		return nil
	}
	sep := "/"
	if c.info.Extra["system"] == "nt" {
		sep = `\`
	}
	basedir := strings.TrimRight(c.info.Basedir, sep)
	paths := make([]string, len(c.h.Builders))
	for i, b := range c.h.Builders {
		paths[i] = basedir + sep + b
	}
	slices.Sort(paths)
	return t.Step("mkdir", func() error {
		_, err := c.run(remote.Request{Name: "mkdir", Args: map[string]any{"paths": paths}})
		return err
	})
}

// run runs a command of the attach sequence to completion and returns its
// updates. It reads the connection itself meanwhile (the attach runs
// before the connection's reader), so the command's updates must fit
// their buffer; the attach's timer bounds it.
func (c *Conn) run(req remote.Request) ([]remote.Update, error) {
	ctx := context.Background()
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

// finishLogin ends the manager's hold on the name and lets go of it: an
// attached connection keeps no login context (nor the watcher map the
// manager's hold left in it).
func (c *Conn) finishLogin() {
	c.endLogin()
	c.endLogin = func() {}
}
