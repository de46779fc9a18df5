// Package remote is the transport-neutral side of remote commands: what a build asks a slave to run (Request), what comes back (Update), and the Command that carries it, over msgpack (package protocol) and Perspective Broker (package protocol/pb) alike.
//
// A build reaches its slave's connection as build.Conn(); Start runs a
// command there, whatever the transport:
//
//	cmd, err := remote.Start(ctx, build.Conn(), remote.Request{Name: "shell", Args: args})
//
// Every transport's connection (protocol.Conn, pb.Conn) is a Commander;
// Start returns an error wrapping ErrNoCommands for a connection that is
// not, such as an in-memory test connection.
//
// Transports create Commands with New and drive them through the Progress
// it returns; applications only ever see the Command.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/buildslave/buildslave/slave"
)

// Commander starts remote commands on a slave: protocol.Conn and pb.Conn,
// the connections of every transport, are Commanders.
type Commander interface {
	// Start starts a command on the slave and returns once the slave has
	// accepted it.
	Start(ctx context.Context, req Request) (*Command, error)
}

// ErrNoCommands is wrapped by the error Start returns for a connection
// that cannot run remote commands.
var ErrNoCommands = errors.New("connection runs no remote commands")

// Start starts req on conn, a build's connection (build.Conn()), and
// returns once the slave has accepted it. conn runs commands if it is a
// Commander, as the connections of every transport are; for any other
// connection Start returns an error wrapping ErrNoCommands that names its
// type.
func Start(ctx context.Context, conn slave.Conn, req Request) (*Command, error) {
	c, ok := conn.(Commander)
	if !ok {
		return nil, fmt.Errorf("remote: %T is not a remote.Commander: %w", conn, ErrNoCommands)
	}
	return c.Start(ctx, req)
}

// Request describes a remote command for Commander.Start.
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

// ErrMaxSize is the error a slave gets for upload bytes beyond maxsize.
var ErrMaxSize = errors.New("maximum upload size exceeded")

// ErrNoTransfer is wrapped by the error of a file transfer request from a
// slave for a command that transfers no such file.
var ErrNoTransfer = errors.New("no such transfer in this command")

// MaxRead bounds one read of a download, whatever length the slave asks.
const MaxRead = 256 << 10

// updateBuffer is how many updates a command holds for its reader before
// the connection waits. Each command allocates its buffer (72 bytes an
// update), and a master's attach sequence runs two commands per slave.
const updateBuffer = 16

var commandIDs atomic.Uint64

// Command is a remote command running on a slave.
type Command struct {
	// ID is the command's id on the wire: unique among all commands of
	// this process.
	ID        string
	req       Request
	ctx       context.Context
	conn      context.Context // the connection's context
	interrupt func(ctx context.Context, why string) error

	updates chan Update
	done    chan struct{}
	err     error // why it ended; set before done is closed

	// Transfer state, touched only by the transport's reader.
	remaining int64 // bytes Upload may still take; -1 for no limit
}

// Progress is a transport's handle on a Command: the transport reports
// through it what the slave sends. Its methods are called by one goroutine
// at a time (the connection's reader).
type Progress struct{ cmd *Command }

// New checks req and returns a Command with a new ID, and the Progress
// through which the transport drives it. conn is the connection's context:
// updates are dropped once it ends; interrupt sends the transport's
// interrupt request.
func New(ctx context.Context, req Request, conn context.Context, interrupt func(ctx context.Context, why string) error) (*Command, *Progress, error) {
	switch req.Name {
	case "upload_file", "upload_directory":
		if req.Upload == nil {
			return nil, nil, fmt.Errorf("%s needs Request.Upload", req.Name)
		}
	case "download_file":
		if req.Download == nil {
			return nil, nil, errors.New("download_file needs Request.Download")
		}
	}
	cmd := &Command{
		ID:        strconv.FormatUint(commandIDs.Add(1), 10),
		req:       req,
		ctx:       ctx,
		conn:      conn,
		interrupt: interrupt,
		updates:   make(chan Update, updateBuffer),
		done:      make(chan struct{}),
		remaining: -1,
	}
	if max, ok := req.Args["maxsize"]; ok && max != nil {
		n, isInt := toInt(max)
		if !isInt || n < 0 {
			return nil, nil, fmt.Errorf("%s: maxsize %v is not a non-negative integer", req.Name, max)
		}
		cmd.remaining = n
	}
	return cmd, &Progress{cmd}, nil
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

// Request is what the command was started with.
func (cmd *Command) Request() Request { return cmd.req }

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
	return cmd.interrupt(ctx, why)
}

// Finish ends the command with err (nil for success). The transport calls
// it once: on completion, or when the connection ends.
func (p *Progress) Finish(err error) {
	p.cmd.err = err
	close(p.cmd.updates)
	close(p.cmd.done)
}

// Deliver hands an update to the application, waiting while its buffer is
// full; it drops the update if the command's context or the connection
// ends.
func (p *Progress) Deliver(u Update) {
	cmd := p.cmd
	select {
	case cmd.updates <- u:
	case <-cmd.ctx.Done():
	case <-cmd.conn.Done():
	}
}

func (p *Progress) transfer(what string, ok bool) error {
	if !ok {
		return fmt.Errorf("%w: %s during %s", ErrNoTransfer, what, p.cmd.req.Name)
	}
	return nil
}

// Write writes uploaded bytes to Request.Upload, up to maxsize: past it the
// bytes that fit are written and ErrMaxSize is returned.
func (p *Progress) Write(data []byte) error {
	cmd := p.cmd
	if err := p.transfer("upload write", cmd.req.Upload != nil); err != nil {
		return err
	}
	over := false
	if cmd.remaining >= 0 && int64(len(data)) > cmd.remaining {
		data, over = data[:cmd.remaining], true
	}
	if _, err := cmd.req.Upload.Write(data); err != nil {
		return err
	}
	if cmd.remaining >= 0 {
		cmd.remaining -= int64(len(data))
	}
	if over {
		return ErrMaxSize
	}
	return nil
}

// SetTimes gives the uploaded file's times to Request.Upload if it is a
// TimeSetter.
func (p *Progress) SetTimes(atime, mtime time.Time) error {
	if err := p.transfer("upload utime", p.cmd.req.Upload != nil); err != nil {
		return err
	}
	if ts, ok := p.cmd.req.Upload.(TimeSetter); ok {
		return ts.SetTimes(atime, mtime)
	}
	return nil
}

// CloseUpload closes Request.Upload if it is an io.Closer.
func (p *Progress) CloseUpload() error {
	if err := p.transfer("upload close", p.cmd.req.Upload != nil); err != nil {
		return err
	}
	return closeIfCloser(p.cmd.req.Upload)
}

// Read reads up to n bytes (at most MaxRead) of Request.Download; fewer at
// its end.
func (p *Progress) Read(n int64) ([]byte, error) {
	if err := p.transfer("download read", p.cmd.req.Download != nil); err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("negative read length %d", n)
	}
	buf := make([]byte, min(n, MaxRead))
	got, err := io.ReadFull(p.cmd.req.Download, buf)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	return buf[:got], nil
}

// CloseDownload closes Request.Download if it is an io.Closer.
func (p *Progress) CloseDownload() error {
	if err := p.transfer("download close", p.cmd.req.Download != nil); err != nil {
		return err
	}
	return closeIfCloser(p.cmd.req.Download)
}

func closeIfCloser(v any) error {
	if c, ok := v.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// FloatTime converts seconds since the epoch, as slaves send file times,
// to a time.Time.
func FloatTime(sec float64) time.Time {
	return time.Unix(0, int64(sec*1e9))
}
