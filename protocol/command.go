package protocol

import (
	"context"
	"errors"
	"fmt"

	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/protocol/wire"
)

// command is a running command as the connection tracks it.
type command struct {
	*remote.Progress
	cmd *remote.Command
}

var _ remote.Commander = (*Conn)(nil)

// Start starts a command on the slave and returns once the slave has
// accepted it. Read the command's Updates until the channel is closed, or
// cancel ctx to have the rest dropped: the connection waits while an
// update cannot be delivered, so an unread command stalls its slave.
func (c *Conn) Start(ctx context.Context, req remote.Request) (*remote.Command, error) {
	var cmd *remote.Command
	cmd, progress, err := remote.New(ctx, req, c.Context(), func(ctx context.Context, why string) error {
		fields := map[string]any{"command_id": cmd.ID, "why": why}
		if req.Builder != "" {
			fields["builder_name"] = req.Builder
		}
		_, err := c.w.Call(ctx, "interrupt_command", fields)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return nil, fmt.Errorf("connection lost: %w", context.Cause(c.Context()))
	}
	if c.commands == nil {
		c.commands = make(map[string]command)
	}
	c.commands[cmd.ID] = command{progress, cmd}
	c.mu.Unlock()

	fields := map[string]any{"command_id": cmd.ID, "command_name": req.Name, "args": req.Args}
	if req.Builder != "" {
		fields["builder_name"] = req.Builder
	}
	if req.Args == nil {
		fields["args"] = map[string]any{}
	}
	if _, err := c.w.Call(ctx, "start_command", fields); err != nil {
		c.forget(cmd.ID)
		return nil, fmt.Errorf("start %s: %w", req.Name, err)
	}
	return cmd, nil
}

// forget removes a command from the running ones.
func (c *Conn) forget(id string) {
	c.mu.Lock()
	delete(c.commands, id)
	if len(c.commands) == 0 {
		c.commands = nil // an idle connection holds no table
	}
	c.mu.Unlock()
}

func (cmd command) update(req wire.Message) (any, error) {
	items, err := req.List("args")
	if err != nil {
		return nil, err
	}
	parsed := make([]remote.Update, 0, len(items))
	for _, item := range items {
		u, err := parseUpdate(item)
		if err != nil {
			return nil, err
		}
		parsed = append(parsed, u)
	}
	for _, u := range parsed {
		cmd.Deliver(u)
	}
	return nil, nil
}

func malformedUpdate(format string, args ...any) error {
	return fmt.Errorf("%w: update %s", wire.ErrMalformed, fmt.Sprintf(format, args...))
}

// parseUpdate reads one [key, value] pair of an update.
func parseUpdate(item any) (remote.Update, error) {
	pair, ok := item.([]any)
	if !ok || len(pair) != 2 {
		return remote.Update{}, malformedUpdate("item is not a [key, value] pair")
	}
	key, ok := pair[0].(string)
	if !ok {
		return remote.Update{}, malformedUpdate("key is not a str")
	}
	u := remote.Update{Key: key, Value: pair[1]}
	switch key {
	case "header", "stdout", "stderr":
		if u.Text, ok = outputText(pair[1]); !ok {
			return remote.Update{}, malformedUpdate("%s is not [text, offsets, times]", key)
		}
	case "log":
		l, isList := pair[1].([]any)
		if !isList || len(l) != 2 {
			return remote.Update{}, malformedUpdate("log is not [name, output]")
		}
		u.Log, ok = l[0].(string)
		if !ok {
			return remote.Update{}, malformedUpdate("log name is not a str")
		}
		if u.Text, ok = outputText(l[1]); !ok {
			return remote.Update{}, malformedUpdate("log output is not [text, offsets, times]")
		}
	case "rc":
		rc, isInt := wire.AsInt(pair[1])
		if !isInt {
			return remote.Update{}, malformedUpdate("rc is not an int")
		}
		u.RC = int(rc)
	}
	return u, nil
}

// outputText is the text of an output chunk: [text, offsets, times], or a
// bare str.
func outputText(v any) (string, bool) {
	if l, ok := v.([]any); ok && len(l) > 0 {
		v = l[0]
	}
	s, ok := v.(string)
	return s, ok
}

func (cmd command) complete(req wire.Message) (any, error) {
	var err error
	switch failure := req["args"].(type) {
	case nil:
	case string:
		err = &remote.CommandError{Text: failure}
	default:
		err = &remote.CommandError{Text: fmt.Sprint(failure)}
	}
	cmd.Finish(err)
	return nil, nil
}

// malformed marks a transfer request for a command without that transfer
// as bad input.
func malformed(err error) error {
	if errors.Is(err, remote.ErrNoTransfer) {
		return fmt.Errorf("%w: %w", wire.ErrMalformed, err)
	}
	return err
}

func (cmd command) uploadWrite(req wire.Message) (any, error) {
	data, err := req.Bytes("args")
	if err != nil {
		return nil, err
	}
	return nil, malformed(cmd.Write(data))
}

func (cmd command) uploadUtime(req wire.Message) (any, error) {
	atime, err := req.Float("access_time")
	if err != nil {
		return nil, err
	}
	mtime, err := req.Float("modified_time")
	if err != nil {
		return nil, err
	}
	return nil, malformed(cmd.SetTimes(remote.FloatTime(atime), remote.FloatTime(mtime)))
}

func (cmd command) uploadClose(wire.Message) (any, error) { return nil, malformed(cmd.CloseUpload()) }

func (cmd command) readFile(req wire.Message) (any, error) {
	n, err := req.Int("length")
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: negative length %d", wire.ErrMalformed, n)
	}
	b, err := cmd.Read(n)
	return b, malformed(err)
}

func (cmd command) readClose(wire.Message) (any, error) { return nil, malformed(cmd.CloseDownload()) }
