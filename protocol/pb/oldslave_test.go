package pb_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/internal/remotetest"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// oldBot is a scripted Buildbot 0.8.6 buildslave (slave/buildslave/bot.py
// at tag v0.8.6): the Bot has getSlaveInfo, getCommands, getVersion,
// setBuilderList, print and shutdown but no getWorkerInfo; its builders
// take startCommand(stepref, stepId, command, args) with 0.8's argument
// names (slavesrc); like Python 2 it sends text as bytes. There is no
// Python 2 here to run the real one.
type oldBot struct {
	t       *testing.T
	calls   chan string // every method the master called, in order
	mu      sync.Mutex
	builder *oldBuilder
}

func (b *oldBot) Call(method string, args pb.Tuple, kw map[string]any) (any, error) {
	b.calls <- method
	switch method {
	case "getSlaveInfo":
		return map[string]any{"admin": []byte("Old Timer <old@example.com>\n"), "host": []byte("a 0.8 box\n"),
			"environ": map[string]any{"HOME": []byte("/home/old")}, "system": []byte("posix"), "basedir": []byte("/srv/old")}, nil
	case "getCommands":
		return map[string]any{"shell": []byte("2.15"), "uploadFile": []byte("2.15"), "downloadFile": []byte("2.15")}, nil
	case "getVersion":
		return []byte("0.8.6"), nil
	case "setBuilderList":
		wanted := pb.AsList(args[0])
		answer := map[string]any{}
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, w := range wanted {
			name, _ := pb.Plain(pb.AsList(w)[0]).(string)
			if b.builder == nil {
				b.builder = &oldBuilder{t: b.t}
			}
			answer[name] = b.builder
		}
		return answer, nil
	case "print", "shutdown":
		return nil, nil
	}
	return nil, pb.NoSuchMethod(method)
}

// oldBuilder is 0.8.6's SlaveBuilder: it answers shell with one line of
// output and rc 0, and uploadFile by writing the bytes of slavesrc's name.
type oldBuilder struct {
	t        *testing.T
	commands sync.WaitGroup
}

func (b *oldBuilder) Call(method string, args pb.Tuple, _ map[string]any) (any, error) {
	switch method {
	case "startBuild":
		return nil, nil
	case "startCommand":
		step := args[0].(*pb.Ref)
		command, _ := pb.Plain(args[2]).(string)
		cmdArgs, _ := args[3].(map[string]any)
		b.commands.Go(func() { b.run(step, command, cmdArgs) })
		return nil, nil
	}
	return nil, pb.NoSuchMethod(method)
}

// run plays the command as 0.8.6 does: updates of [data, 0], then complete.
func (b *oldBuilder) run(step *pb.Ref, command string, args map[string]any) {
	ctx := context.Background()
	update := func(data map[string]any) {
		if _, err := step.Call(ctx, "update", pb.Tuple{[]any{[]any{data, 0}}}, nil); err != nil {
			b.t.Errorf("update: %v", err)
		}
	}
	var failure any
	switch command {
	case "shell":
		update(map[string]any{"stdout": []byte("hello from 0.8\n")})
		update(map[string]any{"rc": 0})
	case "uploadFile":
		src, ok := pb.Plain(args["slavesrc"]).(string)
		if _, isNew := args["workersrc"]; isNew || !ok {
			failure = &pb.RemoteError{Type: "exceptions.KeyError", Value: "slavesrc"}
			break
		}
		writer := args["writer"].(*pb.Ref)
		if _, err := writer.Call(ctx, "write", pb.Tuple{[]byte("contents of " + src)}, nil); err != nil {
			b.t.Errorf("write: %v", err)
		}
		writer.Call(ctx, "close", nil, nil)
		writer.Release()
		update(map[string]any{"rc": 0})
	default:
		failure = &pb.RemoteError{Type: "buildslave.commands.base.UnknownCommand", Value: command}
	}
	step.Call(ctx, "complete", pb.Tuple{failure}, nil)
	step.Release()
}

// TestBuildbot08SlaveAttachesAndRuns attaches a scripted 0.8.6 buildslave:
// the master falls back to the old names for its info, sends 0.8's
// argument names, and runs a shell command and an upload on it.
func TestBuildbot08SlaveAttachesAndRuns(t *testing.T) {
	old, _ := slave.New("old", "pw")
	m, err := slave.NewManager(slave.Config{}, old)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := startServer(t, &pb.Server{Manager: m, Builders: []string{"full"}})

	nc, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := pb.Connect(nc, pb.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve() }()
	defer func() { b.Close(); <-served }()
	bot := &oldBot{t: t, calls: make(chan string, 100)}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	perspective, err := b.Login(ctx, "old", "pw", bot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := perspective.Call(ctx, "keepalive", nil, nil); err != nil {
		t.Errorf("keepalive: %v", err)
	}

	var calls []string
	for len(bot.calls) > 0 {
		calls = append(calls, <-bot.calls)
	}
	// setBuilderList goes out with print and getWorkerInfo, before the
	// master learns that the slave is of the 0.8 era (a 0.8 master asked
	// for the info first; a slave's builders do not depend on it).
	want := []string{"print", "getWorkerInfo", "setBuilderList", "getSlaveInfo", "getCommands", "getVersion", "print"}
	if !slices.Equal(calls, want) {
		t.Errorf("the master called %q, want %q", calls, want)
	}
	st, _ := m.State("old")
	if st.Info.Version != "0.8.6" || st.Info.Admin != "Old Timer <old@example.com>" || st.Info.Commands["shell"] != "2.15" || st.Info.Basedir != "/srv/old" {
		t.Errorf("info = %+v", st.Info)
	}

	build, err := m.Acquire(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	defer build.Release()
	c := build.Conn().(remote.Commander)
	u := remotetest.Run(t, ctx, c, remote.Request{Name: "shell", Builder: "full", Args: map[string]any{"workdir": "build", "command": "true"}})
	if out, rc := remotetest.Output(u, "stdout"); out != "hello from 0.8\n" || rc != 0 {
		t.Errorf("shell: stdout %q, rc %d", out, rc)
	}
	var up bytes.Buffer
	u = remotetest.Run(t, ctx, c, remote.Request{Name: "upload_file", Builder: "full", Upload: &up, Args: map[string]any{
		"path": "/srv/old/full/build/out.txt", "maxsize": nil, "blocksize": 16384}})
	if _, rc := remotetest.Output(u, ""); rc != 0 || up.String() != "contents of /srv/old/full/build/out.txt" {
		t.Errorf("upload: rc %d, %q", rc, up.String())
	}
	bot.builder.commands.Wait()
	if err := context.Cause(b.Context()); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("connection ended: %v", err)
	}
}
