package pb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/buildslave/buildslave/protocol/remote"
)

// Start starts a command on the slave and returns once the slave has
// accepted it, exactly as protocol.Conn.Start does over msgpack: the same
// command names and arguments, with paths absolute on the slave. The
// command runs under Request.Builder (DefaultBuilder if empty), which is
// added to the slave's builders if it lacks it. Over PB, mkdir takes one
// path.
func (c *Conn) Start(ctx context.Context, req remote.Request) (*remote.Command, error) {
	builder := req.Builder
	if builder == "" {
		builder = DefaultBuilder
	}
	ref, err := c.builder(ctx, builder)
	if err != nil {
		return nil, err
	}
	var cmd *remote.Command
	cmd, progress, err := remote.New(ctx, req, c.Context(), func(ctx context.Context, why string) error {
		_, err := ref.Call(ctx, "interruptCommand", Tuple{cmd.ID, why}, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	pc := &pbCommand{c: c, id: cmd.ID, progress: progress}
	name, args, err := pbArgs(req, pc, c.info.Commands)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return nil, fmt.Errorf("connection lost: %w", context.Cause(c.Context()))
	}
	if c.commands == nil {
		c.commands = map[string]*pbCommand{}
	}
	c.commands[cmd.ID] = pc
	c.mu.Unlock()
	if _, err := ref.Call(ctx, "startCommand", Tuple{pc, cmd.ID, name, args}, nil); err != nil {
		c.forget(cmd.ID)
		return nil, fmt.Errorf("start %s: %w", req.Name, err)
	}
	return cmd, nil
}

// forget removes a command from the running ones; it reports whether it
// was running.
func (c *Conn) forget(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.commands[id]
	delete(c.commands, id)
	if len(c.commands) == 0 {
		c.commands = nil // an idle connection holds no table
	}
	return ok
}

// pbArgs turns a request into PB's command name and arguments: PB slaves
// take the older names and join relative paths to the builder's
// directory, which leaves absolute paths as they are. Uploads get a writer
// object and downloads a reader object, which the slave calls. Slaves
// whose transfer commands are older than version 3.0 (Buildbot 0.8) name
// the file slavesrc or slavedest, as Buildbot's masters know.
func pbArgs(req remote.Request, pc *pbCommand, versions map[string]string) (string, map[string]any, error) {
	args := maps.Clone(req.Args)
	if args == nil {
		args = map[string]any{}
	}
	rename := func(from, to string) {
		if v, ok := args[from]; ok {
			delete(args, from)
			args[to] = v
		}
	}
	name := req.Name
	switch name {
	case "mkdir":
		var paths []any
		switch p := args["paths"].(type) {
		case []string:
			for _, s := range p {
				paths = append(paths, s)
			}
		case []any:
			paths = p
		}
		if len(paths) != 1 {
			return "", nil, errors.New(`mkdir over PB takes exactly one path in Args["paths"]`)
		}
		delete(args, "paths")
		args["dir"] = paths[0]
	case "rmdir":
		rename("paths", "dir")
	case "listdir":
		rename("path", "dir")
	case "stat":
		rename("path", "file")
	case "cpdir":
		rename("from_path", "fromdir")
		rename("to_path", "todir")
	case "upload_file", "upload_directory":
		name = map[string]string{"upload_file": "uploadFile", "upload_directory": "uploadDirectory"}[name]
		rename("path", map[bool]string{false: "workersrc", true: "slavesrc"}[olderThan3(versions[name])])
		args["workdir"] = ""
		args["writer"] = &pbWriter{pc}
	case "download_file":
		name = "downloadFile"
		rename("path", map[bool]string{false: "workerdest", true: "slavedest"}[olderThan3(versions[name])])
		args["workdir"] = ""
		args["reader"] = &pbReader{pc}
	}
	return name, args, nil
}

// olderThan3 reports whether a command version such as "2.15" is before
// 3.0, the version that renamed slave to worker in Buildbot's arguments.
func olderThan3(version string) bool {
	major, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(major)
	return err == nil && n < 3
}

// pbCommand is the master's object for one command (Buildbot's
// RemoteCommand): the slave calls update and complete on it.
type pbCommand struct {
	c        *Conn
	id       string
	progress *remote.Progress
}

// finish ends the command once.
func (pc *pbCommand) finish(err error) { pc.progress.Finish(err) }

func (pc *pbCommand) Call(method string, args Tuple, _ map[string]any) (any, error) {
	switch method {
	case "update":
		if len(args) != 1 {
			return nil, fmt.Errorf("%w: update takes a list of updates", ErrMalformed)
		}
		updates, err := parseUpdates(args[0])
		if err != nil {
			return nil, err
		}
		if !pc.running() {
			return nil, nil // late output of a command that ended
		}
		for _, u := range updates {
			pc.progress.Deliver(u)
		}
		return nil, nil
	case "complete":
		if !pc.c.forget(pc.id) {
			return nil, nil // ended with the connection already
		}
		var err error
		switch f := argAt(args, 0).(type) {
		case nil:
		case *RemoteError:
			err = &remote.CommandError{Text: f.Error()}
		default:
			err = &remote.CommandError{Text: fmt.Sprint(f)}
		}
		pc.finish(err)
		return nil, nil
	}
	return nil, noSuchMethod(method)
}

func (pc *pbCommand) running() bool {
	pc.c.mu.Lock()
	defer pc.c.mu.Unlock()
	_, ok := pc.c.commands[pc.id]
	return ok
}

// parseUpdates reads update's argument: a list of [{key: value}, number].
func parseUpdates(v any) ([]remote.Update, error) {
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: updates are %s, want list", ErrMalformed, typeName(v))
	}
	var updates []remote.Update
	for _, item := range items {
		pair := AsList(item)
		if len(pair) != 2 {
			return nil, fmt.Errorf("%w: update is not [dictionary, number]", ErrMalformed)
		}
		m, ok := pair[0].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: update is not [dictionary, number]", ErrMalformed)
		}
		for key, value := range m {
			u, err := parseUpdate(key, value)
			if err != nil {
				return nil, err
			}
			updates = append(updates, u)
		}
	}
	return updates, nil
}

func parseUpdate(key string, value any) (remote.Update, error) {
	u := remote.Update{Key: key, Value: value}
	bad := func(want string) (remote.Update, error) {
		return remote.Update{}, fmt.Errorf("%w: update %s is %s, want %s", ErrMalformed, key, typeName(value), want)
	}
	switch key {
	case "header", "stdout", "stderr":
		s, ok := textValue(value)
		if !ok {
			return bad("text")
		}
		u.Text = s
	case "log":
		l := AsList(value)
		if len(l) != 2 {
			return bad("(name, text)")
		}
		name, ok1 := textValue(l[0])
		s, ok2 := textValue(l[1])
		if !ok1 || !ok2 {
			return bad("(name, text)")
		}
		u.Log, u.Text = name, s
	case "rc":
		rc, ok := value.(int64)
		if !ok {
			return bad("int")
		}
		u.RC = int(rc)
	}
	return u, nil
}

// textValue is unicode or bytes as a string.
func textValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// pbWriter receives an upload (Buildbot's FileWriter): write, utime,
// close, and unpack for directories.
type pbWriter struct{ pc *pbCommand }

func (w *pbWriter) Call(method string, args Tuple, _ map[string]any) (any, error) {
	p := w.pc.progress
	if !w.pc.running() {
		return nil, errors.New("the command has ended")
	}
	switch method {
	case "write":
		data, ok := argAt(args, 0).([]byte)
		if !ok {
			s, isText := argAt(args, 0).(string)
			if !isText {
				return nil, fmt.Errorf("%w: write takes bytes", ErrMalformed)
			}
			data = []byte(s)
		}
		return nil, p.Write(data)
	case "utime":
		times := AsList(argAt(args, 0))
		if len(times) != 2 {
			return nil, fmt.Errorf("%w: utime takes (access_time, modified_time)", ErrMalformed)
		}
		atime, ok1 := seconds(times[0])
		mtime, ok2 := seconds(times[1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: utime takes numbers", ErrMalformed)
		}
		return nil, p.SetTimes(remote.FloatTime(atime), remote.FloatTime(mtime))
	case "close", "unpack":
		return nil, p.CloseUpload()
	}
	return nil, noSuchMethod(method)
}

func seconds(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	}
	return 0, false
}

// pbReader supplies a download (Buildbot's FileReader): read and close.
type pbReader struct{ pc *pbCommand }

func (r *pbReader) Call(method string, args Tuple, _ map[string]any) (any, error) {
	p := r.pc.progress
	if !r.pc.running() {
		return nil, errors.New("the command has ended")
	}
	switch method {
	case "read":
		n, ok := argAt(args, 0).(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("%w: read takes a length", ErrMalformed)
		}
		return p.Read(n)
	case "close":
		return nil, p.CloseDownload()
	}
	return nil, noSuchMethod(method)
}
