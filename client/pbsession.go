package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/pb"
)

// servePB makes one PB connection to addr, logs in and serves the master until
// the connection ends; it says whether the master asked for a shutdown and
// whether it had attached the slave.
func (s *Slave) servePB(ctx context.Context, addr string, log *slog.Logger) (shutdown, attached bool, err error) {
	nc, err := s.dialTCP(ctx, addr)
	if err != nil {
		return false, false, fmt.Errorf("cannot connect: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() }) // the handshake follows ctx
	b, err := pb.Connect(nc, pb.BrokerConfig{})
	if !stop() || err != nil {
		nc.Close()
		return false, false, fmt.Errorf("PB handshake: %w", errors.Join(ctx.Err(), err))
	}
	sess := newSession(s.cfg.Basedir, log)
	bot := &pbBot{sess: sess, ctx: b.Context(), builders: map[string]*pbBuilder{}}
	served := make(chan error, 1)
	go func() { served <- b.Serve() }()
	log.Info("connected to master")

	loginCtx, cancel := context.WithCancel(ctx)
	perspective, err := b.Login(loginCtx, s.cfg.Name, s.cfg.Password, bot)
	cancel()
	if err != nil {
		b.Close()
		<-served
		return false, false, err
	}
	if s.cfg.Keepalive > 0 {
		sess.wg.Go(func() { keepalives(b.Context(), perspective, s.cfg.Keepalive, log) })
	}
	return sess.wait(ctx, b, served)
}

// keepalives calls the master's keepalive every interval until ctx ends,
// as the stock PB slave does; a master that does not answer within the
// interval has the connection dropped.
func keepalives(ctx context.Context, perspective *pb.Ref, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		callCtx, cancel := context.WithTimeout(ctx, interval)
		_, err := perspective.Call(callCtx, "keepalive", nil, nil)
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Warn("master did not answer a keepalive; dropping the connection", "err", err)
			perspective.Broker().Close()
			return
		}
	}
}

// pbBot is the object the master calls to run this slave over PB
// (Buildbot's Bot), with both the current names and the 0.8-era ones.
type pbBot struct {
	sess *session
	ctx  context.Context // the connection's

	mu       sync.Mutex
	builders map[string]*pbBuilder
}

func (bot *pbBot) Call(method string, args pb.Tuple, kw map[string]any) (any, error) {
	s := bot.sess
	switch method {
	case "print":
		s.log.Info("message from master", "message", messageArg(args, kw))
		return nil, nil
	case "getWorkerInfo":
		closeOnce(s.attached)
		return workerInfo(s.basedir), nil
	case "getCommands":
		return workerInfo(s.basedir)["worker_commands"], nil
	case "getVersion":
		return Version, nil
	case "setBuilderList":
		return bot.setBuilderList(args)
	case "shutdown":
		s.log.Info("master asked the slave to shut down")
		closeOnce(s.shutdown)
		return nil, nil
	}
	return nil, pb.NoSuchMethod(method)
}

// messageArg is print's message, given by position or by name.
func messageArg(args pb.Tuple, kw map[string]any) string {
	v := kw["message"]
	if len(args) > 0 {
		v = args[0]
	}
	msg, _ := pb.Plain(v).(string)
	return msg
}

// setBuilderList keeps the builders the master names, each with its
// directory under the base directory, and answers their objects.
func (bot *pbBot) setBuilderList(args pb.Tuple) (any, error) {
	if len(args) != 1 {
		return nil, errors.New("setBuilderList takes a list of (name, builddir)")
	}
	bot.mu.Lock()
	defer bot.mu.Unlock()
	answer := map[string]any{}
	wanted := map[string]*pbBuilder{}
	for _, item := range pb.AsList(args[0]) {
		pair := pb.AsList(item)
		if len(pair) != 2 {
			return nil, errors.New("setBuilderList takes a list of (name, builddir)")
		}
		name, _ := pb.Plain(pair[0]).(string)
		builddir, _ := pb.Plain(pair[1]).(string)
		if name == "" || builddir == "" || !filepath.IsLocal(builddir) {
			return nil, fmt.Errorf("setBuilderList: bad builder %q in directory %q", name, builddir)
		}
		dir := filepath.Join(bot.sess.basedir, builddir)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return nil, err
		}
		b := bot.builders[name]
		if b == nil || b.dir != dir {
			b = &pbBuilder{bot: bot, name: name, dir: dir}
		}
		wanted[name] = b
		answer[name] = b
	}
	bot.builders = wanted
	return answer, nil
}

// pbBuilder is the object the master runs one builder's commands through
// (Buildbot's WorkerForBuilder).
type pbBuilder struct {
	bot  *pbBot
	name string
	dir  string // relative paths of its commands are joined to it
}

func (b *pbBuilder) Call(method string, args pb.Tuple, kw map[string]any) (any, error) {
	s := b.bot.sess
	switch method {
	case "print":
		s.log.Info("message from master", "builder", b.name, "message", messageArg(args, kw))
		return nil, nil
	case "startBuild":
		return nil, nil
	case "startCommand":
		if len(args) != 4 {
			return nil, errors.New("startCommand takes (command, id, name, args)")
		}
		ref, ok := args[0].(*pb.Ref)
		id, _ := pb.Plain(args[1]).(string)
		name, _ := pb.Plain(args[2]).(string)
		cmdArgs, ok2 := pb.Plain(args[3]).(map[string]any)
		if !ok || !ok2 || id == "" || name == "" {
			return nil, errors.New("startCommand takes (command, id, name, args)")
		}
		line := &pbLine{cmd: ref}
		name, cmdArgs = b.localArgs(name, cmdArgs, line)
		if err := s.start(b.bot.ctx, id, name, cmdArgs, line); err != nil {
			line.release()
			return nil, err
		}
		return nil, nil
	case "interruptCommand":
		if len(args) < 1 {
			return nil, errors.New("interruptCommand takes (id, why)")
		}
		id, _ := pb.Plain(args[0]).(string)
		why, _ := pb.Plain(argAt(args, 1)).(string)
		s.interrupt(id, why)
		return nil, nil
	case "shutdown": // how masters before 0.8.3 ask
		s.log.Info("master asked the slave to shut down")
		closeOnce(s.shutdown)
		return nil, nil
	}
	return nil, pb.NoSuchMethod(method)
}

func argAt(args pb.Tuple, i int) any {
	if i < len(args) {
		return args[i]
	}
	return nil
}

// localArgs turns a PB command into this slave's: paths relative to the
// builder's directory become absolute (an absolute one stays, as Python's
// os.path.join does), the older argument names become the current ones,
// and the master's writer or reader object moves to line.
func (b *pbBuilder) localArgs(name string, args map[string]any, line *pbLine) (string, map[string]any) {
	str := func(k string) string { v, _ := args[k].(string); return v }
	move := func(from, to string, v any) {
		delete(args, from)
		args[to] = v
	}
	if w, ok := args["writer"].(*pb.Ref); ok {
		line.writer = w
		delete(args, "writer")
	}
	if r, ok := args["reader"].(*pb.Ref); ok {
		line.reader = r
		delete(args, "reader")
	}
	switch name {
	case "mkdir":
		move("dir", "paths", []any{join(b.dir, str("dir"))})
	case "rmdir":
		var paths []any
		if l, ok := args["dir"].([]any); ok {
			for _, d := range l {
				s, _ := d.(string)
				paths = append(paths, join(b.dir, s))
			}
		} else {
			paths = []any{join(b.dir, str("dir"))}
		}
		move("dir", "paths", paths)
	case "cpdir":
		move("fromdir", "from_path", join(b.dir, str("fromdir")))
		move("todir", "to_path", join(b.dir, str("todir")))
	case "stat":
		path := join(b.dir, str("workdir"), str("file"))
		delete(args, "workdir")
		move("file", "path", path)
	case "glob", "rmfile":
		args["path"] = join(b.dir, str("path"))
	case "listdir":
		move("dir", "path", join(b.dir, str("dir")))
	case "shell":
		args["workdir"] = join(b.dir, str("workdir"))
	case "uploadFile", "uploadDirectory":
		path := join(b.dir, str("workdir"), expandUser(str("workersrc")))
		delete(args, "workdir")
		move("workersrc", "path", path)
	case "downloadFile":
		path := join(b.dir, str("workdir"), expandUser(str("workerdest")))
		delete(args, "workdir")
		move("workerdest", "path", path)
	}
	return name, args
}

// join joins paths as Python's os.path.join: an absolute element discards
// those before it.
func join(elems ...string) string {
	var p string
	for _, e := range elems {
		if filepath.IsAbs(e) {
			p = e
		} else {
			p = filepath.Join(p, e)
		}
	}
	return p
}

// expandUser expands a leading "~" to the home directory.
func expandUser(p string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return p
	}
	return home + p[1:]
}

// pbLine is a running command's line to a PB master: the master's command
// object, and its writer or reader object for file transfers.
type pbLine struct {
	cmd, writer, reader *pb.Ref
}

var _ commandLine = (*pbLine)(nil)

// Update sends the pairs as PB's updates: a list of [{key: value}, 0],
// where output is its text alone.
func (l *pbLine) Update(ctx context.Context, pairs [][2]any) error {
	updates := make([]any, 0, len(pairs))
	for _, kv := range pairs {
		key, _ := kv[0].(string)
		v := kv[1]
		switch key {
		case "stdout", "stderr", "header":
			v = outputText(v)
		case "log":
			if lv, ok := v.([]any); ok && len(lv) == 2 {
				v = pb.Tuple{lv[0], outputText(lv[1])}
			}
		}
		updates = append(updates, []any{map[string]any{key: v}, 0})
	}
	_, err := l.cmd.Call(ctx, "update", pb.Tuple{updates}, nil)
	return err
}

// outputText is the text of an output chunk [text, offsets, times].
func outputText(v any) any {
	if l, ok := v.([]any); ok && len(l) > 0 {
		return l[0]
	}
	return v
}

func (l *pbLine) call(ctx context.Context, ref *pb.Ref, what, method string, args ...any) (any, error) {
	if ref == nil {
		return nil, fmt.Errorf("the master sent no %s for this command", what)
	}
	return ref.Call(ctx, method, pb.Tuple(args), nil)
}

func (l *pbLine) do(ctx context.Context, ref *pb.Ref, what, method string, args ...any) error {
	_, err := l.call(ctx, ref, what, method, args...)
	return err
}

func (l *pbLine) UploadFileWrite(ctx context.Context, data []byte) error {
	return l.do(ctx, l.writer, "writer", "write", data)
}

func (l *pbLine) UploadFileClose(ctx context.Context) error {
	return l.do(ctx, l.writer, "writer", "close")
}

func (l *pbLine) UploadFileUtime(ctx context.Context, accessTime, modifiedTime float64) error {
	return l.do(ctx, l.writer, "writer", "utime", pb.Tuple{accessTime, modifiedTime})
}

func (l *pbLine) UploadDirectoryWrite(ctx context.Context, data []byte) error {
	return l.do(ctx, l.writer, "writer", "write", data)
}

func (l *pbLine) UploadDirectoryUnpack(ctx context.Context) error {
	return l.do(ctx, l.writer, "writer", "unpack")
}

func (l *pbLine) ReadFile(ctx context.Context, length int) ([]byte, error) {
	res, err := l.call(ctx, l.reader, "reader", "read", length)
	switch v := res.(type) {
	case []byte:
		return v, err
	case string:
		return []byte(v), err
	case nil:
		return nil, err
	}
	return nil, fmt.Errorf("read: master answered %T, want bytes", res)
}

func (l *pbLine) ReadFileClose(ctx context.Context) error {
	return l.do(ctx, l.reader, "reader", "close")
}

// complete tells the master the command is over, with the failure as a
// Failure, then lets go of the master's objects.
func (l *pbLine) complete(ctx context.Context, failure error) error {
	var f any
	if failure != nil {
		f = &pb.RemoteError{Type: "builtins.RuntimeError", Value: failure.Error()}
	}
	_, err := l.cmd.Call(ctx, "complete", pb.Tuple{f}, nil)
	l.release()
	return err
}

// release tells the master the slave holds its objects no more.
func (l *pbLine) release() {
	for _, r := range []*pb.Ref{l.cmd, l.writer, l.reader} {
		if r != nil {
			r.Release()
		}
	}
}
