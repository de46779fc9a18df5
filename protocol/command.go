package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/buildslave/buildslave/protocol/wire"
)

// Request describes a remote command for Conn.Start.
type Request struct {
	// Name is the command: "shell", "mkdir", "rmdir", "listdir", "stat",
	// "glob", "rmfile", "cpdir", "upload_file", "upload_directory" or
	// "download_file".
	Name string
	// Args are the command's arguments, with paths already absolute on
	// the slave: for shell {workdir, command, env, timeout, ...}; for
	// upload_file {path, maxsize, blocksize, keepstamp}; and so on.
	Args map[string]any
	// Builder is the builder the command runs for, if any.
	Builder string
	// Upload receives the bytes of upload_file (the file) and
	// upload_directory (a tar archive, compressed as Args["compress"]
	// says). At most Args["maxsize"] bytes are written when that is an
	// integer; a slave sending more fails its command. If Upload is an
	// io.Closer it is closed when the slave has sent everything, and if it
	// is a TimeSetter it is given the file's times when keepstamp is set.
	Upload io.Writer
	// Download supplies the bytes of download_file. If it is an io.Closer
	// it is closed when the slave has read everything.
	Download io.Reader
}

// TimeSetter is implemented by an Upload writer that records the access
// and modification times the slave reports for an uploaded file.
type TimeSetter interface {
	SetTimes(atime, mtime time.Time) error
}

// Update is one item of a command's progress.
type Update struct {
	// Key is what it is: "header", "stdout", "stderr", "log", "rc",
	// "elapsed", "files", "stat" or another key the slave sends.
	Key string
	// Text is the output of a header, stdout, stderr or log update.
	Text string
	// Log names the log file of a log update.
	Log string
	// RC is the exit code of an rc update.
	RC int
	// Value is the update's value as sent: for "files" a []any of names,
	// for "stat" the 10-tuple of os.stat, for "elapsed" the seconds.
	Value any
}

// CommandError is the failure a slave reports when a command completes
// with an error (not a non-zero exit code, which is an rc update).
type CommandError struct {
	Text string
}

func (e *CommandError) Error() string { return "remote command failed: " + e.Text }

// updateBuffer is how many updates a command holds for its reader before
// the connection waits.
const updateBuffer = 64

var commandIDs atomic.Uint64

// Command is a remote command running on a slave.
type Command struct {
	// ID is the command_id: unique among all commands of this process.
	ID   string
	conn *Conn
	ctx  context.Context
	req  Request

	updates chan Update
	done    chan struct{}
	err     error // why it ended; set before done is closed

	// Transfer state, touched only by the connection's reader.
	remaining int64 // bytes Upload may still take; -1 for no limit
}

// Start starts a command on the slave and returns once the slave has
// accepted it. Read the command's Updates until the channel is closed, or
// cancel ctx to have the rest dropped: the connection waits while an
// update cannot be delivered, so an unread command stalls its slave.
func (c *Conn) Start(ctx context.Context, req Request) (*Command, error) {
	cmd, err := c.newCommand(ctx, req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return nil, fmt.Errorf("connection lost: %w", context.Cause(c.Context()))
	}
	if c.commands == nil {
		c.commands = make(map[string]*Command)
	}
	c.commands[cmd.ID] = cmd
	c.mu.Unlock()

	fields := map[string]any{"command_id": cmd.ID, "command_name": req.Name, "args": req.Args}
	if req.Builder != "" {
		fields["builder_name"] = req.Builder
	}
	if req.Args == nil {
		fields["args"] = map[string]any{}
	}
	if _, err := c.w.Call(ctx, "start_command", fields); err != nil {
		c.forget(cmd)
		return nil, fmt.Errorf("start %s: %w", req.Name, err)
	}
	return cmd, nil
}

// newCommand checks req and builds its Command, with a new ID.
func (c *Conn) newCommand(ctx context.Context, req Request) (*Command, error) {
	switch req.Name {
	case "upload_file", "upload_directory":
		if req.Upload == nil {
			return nil, fmt.Errorf("%s needs Request.Upload", req.Name)
		}
	case "download_file":
		if req.Download == nil {
			return nil, errors.New("download_file needs Request.Download")
		}
	}
	cmd := &Command{
		ID:        strconv.FormatUint(commandIDs.Add(1), 10),
		conn:      c,
		ctx:       ctx,
		req:       req,
		updates:   make(chan Update, updateBuffer),
		done:      make(chan struct{}),
		remaining: -1,
	}
	if max, ok := req.Args["maxsize"]; ok && max != nil {
		n, isInt := toInt(max)
		if !isInt || n < 0 {
			return nil, fmt.Errorf("%s: maxsize %v is not a non-negative integer", req.Name, max)
		}
		cmd.remaining = n
	}
	return cmd, nil
}

func toInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case int32:
		return int64(v), true
	}
	return 0, false
}

// forget removes cmd from the running commands.
func (c *Conn) forget(cmd *Command) {
	c.mu.Lock()
	delete(c.commands, cmd.ID)
	if len(c.commands) == 0 {
		c.commands = nil // an idle connection holds no table
	}
	c.mu.Unlock()
}

// Updates delivers the command's progress in order; it is closed when the
// command has completed or the connection is lost.
func (cmd *Command) Updates() <-chan Update { return cmd.updates }

// Done is closed when the command has ended.
func (cmd *Command) Done() <-chan struct{} { return cmd.done }

// Wait waits for the command to end and returns nil if it completed, a
// *CommandError if the slave reported a failure, an error wrapping the
// connection's cause if the connection was lost, or ctx's error. A
// non-zero exit code is not an error: it arrives as an rc update.
func (cmd *Command) Wait(ctx context.Context) error {
	select {
	case <-cmd.done:
		return cmd.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Interrupt asks the slave to stop the command; why is shown in its log.
// The command still ends with its own rc and completion.
func (cmd *Command) Interrupt(ctx context.Context, why string) error {
	fields := map[string]any{"command_id": cmd.ID, "why": why}
	if cmd.req.Builder != "" {
		fields["builder_name"] = cmd.req.Builder
	}
	_, err := cmd.conn.w.Call(ctx, "interrupt_command", fields)
	return err
}

// finish ends the command. Only the connection's reader calls it, once:
// on completion, or for the commands still running when the connection
// ends.
func (cmd *Command) finish(err error) {
	cmd.err = err
	close(cmd.updates)
	close(cmd.done)
}

// deliver hands an update to the application, dropping it if the
// command's context is done.
func (cmd *Command) deliver(u Update) {
	select {
	case cmd.updates <- u:
	case <-cmd.ctx.Done():
	case <-cmd.conn.Context().Done():
	}
}

func (cmd *Command) update(req wire.Message) (any, error) {
	items, err := req.List("args")
	if err != nil {
		return nil, err
	}
	parsed := make([]Update, 0, len(items))
	for _, item := range items {
		u, err := parseUpdate(item)
		if err != nil {
			return nil, err
		}
		parsed = append(parsed, u)
	}
	for _, u := range parsed {
		cmd.deliver(u)
	}
	return nil, nil
}

func malformedUpdate(format string, args ...any) error {
	return fmt.Errorf("%w: update %s", wire.ErrMalformed, fmt.Sprintf(format, args...))
}

// parseUpdate reads one [key, value] pair of an update.
func parseUpdate(item any) (Update, error) {
	pair, ok := item.([]any)
	if !ok || len(pair) != 2 {
		return Update{}, malformedUpdate("item is not a [key, value] pair")
	}
	key, ok := pair[0].(string)
	if !ok {
		return Update{}, malformedUpdate("key is not a str")
	}
	u := Update{Key: key, Value: pair[1]}
	switch key {
	case "header", "stdout", "stderr":
		if u.Text, ok = outputText(pair[1]); !ok {
			return Update{}, malformedUpdate("%s is not [text, offsets, times]", key)
		}
	case "log":
		l, isList := pair[1].([]any)
		if !isList || len(l) != 2 {
			return Update{}, malformedUpdate("log is not [name, output]")
		}
		u.Log, ok = l[0].(string)
		if !ok {
			return Update{}, malformedUpdate("log name is not a str")
		}
		if u.Text, ok = outputText(l[1]); !ok {
			return Update{}, malformedUpdate("log output is not [text, offsets, times]")
		}
	case "rc":
		rc, isInt := wire.AsInt(pair[1])
		if !isInt {
			return Update{}, malformedUpdate("rc is not an int")
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

func (cmd *Command) complete(req wire.Message) (any, error) {
	var err error
	switch failure := req["args"].(type) {
	case nil:
	case string:
		err = &CommandError{Text: failure}
	default:
		err = &CommandError{Text: fmt.Sprint(failure)}
	}
	cmd.conn.forget(cmd)
	cmd.finish(err)
	return nil, nil
}

// errMaxSize is the exception a slave gets for upload bytes beyond maxsize.
var errMaxSize = errors.New("maximum upload size exceeded")

func (cmd *Command) uploadWrite(req wire.Message) (any, error) {
	if cmd.req.Upload == nil {
		return nil, fmt.Errorf("%w: %s during %s", wire.ErrMalformed, req.Op(), cmd.req.Name)
	}
	data, err := req.Bytes("args")
	if err != nil {
		return nil, err
	}
	over := false
	if cmd.remaining >= 0 && int64(len(data)) > cmd.remaining {
		data, over = data[:cmd.remaining], true
	}
	if _, err := cmd.req.Upload.Write(data); err != nil {
		return nil, err
	}
	if cmd.remaining >= 0 {
		cmd.remaining -= int64(len(data))
	}
	if over {
		return nil, errMaxSize
	}
	return nil, nil
}

func (cmd *Command) uploadUtime(req wire.Message) (any, error) {
	if cmd.req.Upload == nil {
		return nil, fmt.Errorf("%w: %s during %s", wire.ErrMalformed, req.Op(), cmd.req.Name)
	}
	atime, err := req.Float("access_time")
	if err != nil {
		return nil, err
	}
	mtime, err := req.Float("modified_time")
	if err != nil {
		return nil, err
	}
	if ts, ok := cmd.req.Upload.(TimeSetter); ok {
		return nil, ts.SetTimes(floatTime(atime), floatTime(mtime))
	}
	return nil, nil
}

func floatTime(sec float64) time.Time {
	return time.Unix(0, int64(sec*1e9))
}

func (cmd *Command) uploadClose(req wire.Message) (any, error) {
	if cmd.req.Upload == nil {
		return nil, fmt.Errorf("%w: %s during %s", wire.ErrMalformed, req.Op(), cmd.req.Name)
	}
	if cl, ok := cmd.req.Upload.(io.Closer); ok {
		return nil, cl.Close()
	}
	return nil, nil
}

// maxRead bounds one update_read_file answer, whatever length the slave asks.
const maxRead = 256 << 10

func (cmd *Command) readFile(req wire.Message) (any, error) {
	if cmd.req.Download == nil {
		return nil, fmt.Errorf("%w: %s during %s", wire.ErrMalformed, req.Op(), cmd.req.Name)
	}
	n, err := req.Int("length")
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: negative length %d", wire.ErrMalformed, n)
	}
	buf := make([]byte, min(n, maxRead))
	got, err := io.ReadFull(cmd.req.Download, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	return buf[:got], nil
}

func (cmd *Command) readClose(req wire.Message) (any, error) {
	if cmd.req.Download == nil {
		return nil, fmt.Errorf("%w: %s during %s", wire.ErrMalformed, req.Op(), cmd.req.Name)
	}
	if cl, ok := cmd.req.Download.(io.Closer); ok {
		return nil, cl.Close()
	}
	return nil, nil
}
