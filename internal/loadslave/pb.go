package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/buildslave/buildslave/protocol/pb"
)

// hostPort is the TCP address of a -url given as HOST:PORT, tcp://HOST:PORT
// or ws://HOST:PORT/.
func hostPort(u string) string {
	if strings.Contains(u, "://") {
		if p, err := url.Parse(u); err == nil {
			return p.Host
		}
	}
	return u
}

// pbSession is one PB connection: dial, PB's handshake, the login with the
// slave's mind object (answering the master's print, getWorkerInfo and
// setBuilderList while the login waits), then serving the master until
// the connection ends. It returns the error of a connection that ended
// before the login was answered, nil once the connection ended after it.
// An idle attached slave costs one goroutine (the one reading), its
// socket and its Broker.
func (s *slaves) pbSession(a *attempt) error {
	dctx, cancel := context.WithDeadline(s.ctx, s.dialDeadline(a))
	defer cancel()
	nc, err := s.dial(a.name)(dctx, "tcp", a.url)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(s.ctx, func() { nc.Close() })
	defer stop()
	nc.SetReadDeadline(s.dialDeadline(a)) // until logged in
	b, err := pb.Connect(nc, pb.BrokerConfig{WriteTimeout: time.Minute})
	if err != nil {
		nc.Close()
		return fmt.Errorf("PB handshake: %w", err)
	}
	bot := &pbBot{s: s, base: "/nonexistent/" + a.name, ctx: b.Context()}
	if s.exec {
		bot.base = filepath.Join(s.basedir, a.name)
	}
	login := make(chan error, 1)
	go func() { // ends with the login; Serve below answers the master meanwhile
		_, err := b.Login(dctx, a.name, s.password, bot)
		if err != nil {
			b.CloseWithCause(err)
		} else {
			nc.SetReadDeadline(time.Time{})
			s.attach(a)
		}
		login <- err
	}()
	cause := b.Serve()
	if err := <-login; err != nil && s.ctx.Err() == nil {
		return fmt.Errorf("login: %v", err)
	}
	if !a.attachedOnce.Load() && s.ctx.Err() == nil {
		return fmt.Errorf("connection lost before attach: %v", cause)
	}
	return nil
}

// pbBot is a slave's mind: the object the master calls (Buildbot's Bot).
type pbBot struct {
	s    *slaves
	base string
	ctx  context.Context // the connection's
}

func (bot *pbBot) Call(method string, args pb.Tuple, _ map[string]any) (any, error) {
	switch method {
	case "print", "shutdown":
		return nil, nil
	case "getWorkerInfo":
		return map[string]any{"basedir": bot.base, "system": "posix", "version": "loadslave",
			"numcpus": 1, "worker_commands": commands, "environ": map[string]any{}}, nil
	case "setBuilderList":
		if len(args) != 1 {
			return nil, errors.New("setBuilderList takes a list of (name, builddir)")
		}
		answer := map[string]any{}
		for _, item := range pb.AsList(args[0]) {
			pair := pb.AsList(item)
			if len(pair) != 2 {
				return nil, errors.New("setBuilderList takes a list of (name, builddir)")
			}
			name, _ := pb.Plain(pair[0]).(string)
			dir, _ := pb.Plain(pair[1]).(string)
			b := &pbBuilder{bot: bot, dir: filepath.Join(bot.base, dir)}
			if bot.s.exec {
				if err := os.MkdirAll(b.dir, 0o755); err != nil {
					return nil, err
				}
			}
			answer[name] = b
		}
		return answer, nil
	}
	return nil, pb.NoSuchMethod(method)
}

// pbBuilder is a slave's object for one builder (Buildbot's
// WorkerForBuilder): the master starts commands through it.
type pbBuilder struct {
	bot *pbBot
	dir string // the builder's directory: relative paths are under it
}

func (b *pbBuilder) Call(method string, args pb.Tuple, _ map[string]any) (any, error) {
	switch method {
	case "print", "startBuild", "interruptCommand", "shutdown":
		return nil, nil
	case "startCommand":
		ref, ok1 := argAt(args, 0).(*pb.Ref)
		cmdArgs, ok2 := pb.Plain(argAt(args, 3)).(map[string]any)
		if len(args) != 4 || !ok1 || !ok2 {
			return nil, errors.New("startCommand takes (command, id, name, args)")
		}
		name, _ := pb.Plain(args[2]).(string)
		s := b.bot.s
		s.wg.Go(func() { s.pbCommand(b.bot.ctx, ref, name, b.dir, cmdArgs) })
		return nil, nil
	}
	return nil, pb.NoSuchMethod(method)
}

// pbCommand answers one remote command as command does over msgpack:
// listdir finds nothing, shell runs for real with -exec, everything else
// succeeds at once; then it lets go of the master's command object.
func (s *slaves) pbCommand(ctx context.Context, ref *pb.Ref, name, dir string, args map[string]any) {
	rc := 0
	var updates []any
	path := func(key string) string {
		p, _ := args[key].(string)
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	switch name {
	case "listdir":
		updates = append(updates, []any{map[string]any{"files": []any{}}, 0})
	case "mkdir":
		if s.exec {
			os.MkdirAll(path("dir"), 0o755)
		}
	case "shell":
		if s.exec {
			args["workdir"] = path("workdir")
			rc = shell(args)
			s.builds.Add(1) // before the master hears of it, so a count after the build sees it
		}
	}
	updates = append(updates, []any{map[string]any{"rc": rc}, 0})
	ref.Call(ctx, "update", pb.Tuple{updates}, nil)
	ref.Call(ctx, "complete", pb.Tuple{nil}, nil)
	ref.Release()
}

func argAt(args pb.Tuple, i int) any {
	if i < len(args) {
		return args[i]
	}
	return nil
}
