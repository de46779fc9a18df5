package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/buildslave/buildslave/client/commands"
	"github.com/buildslave/buildslave/protocol/wire"
)

// session is one connection to the master: it answers the master's
// requests and owns the commands started on it, which end when the
// connection does.
type session struct {
	basedir string
	log     *slog.Logger
	conn    *wire.Conn

	attached chan struct{} // closed at the first get_worker_info
	shutdown chan struct{} // closed by the shutdown op

	mu       sync.Mutex
	settings commands.Settings
	running  map[string]*commands.Command
	wg       sync.WaitGroup // command goroutines
}

func newSession(basedir string, log *slog.Logger) *session {
	return &session{basedir: basedir, log: log, attached: make(chan struct{}), shutdown: make(chan struct{}),
		running: map[string]*commands.Command{}}
}

// handle answers one request; it runs on the connection's reader.
func (s *session) handle(_ context.Context, req wire.Message) (any, error) {
	switch op := req.Op(); op {
	case "print":
		msg, err := req.String("message")
		if err == nil {
			s.log.Info("message from master", "message", msg)
		}
		return nil, err
	case "keepalive":
		return nil, nil
	case "get_worker_info":
		closeOnce(s.attached)
		return workerInfo(s.basedir), nil
	case "set_worker_settings":
		return nil, s.setSettings(req)
	case "start_command":
		return nil, s.startCommand(req)
	case "interrupt_command":
		return nil, s.interruptCommand(req)
	case "shutdown":
		s.log.Info("master asked the slave to shut down")
		closeOnce(s.shutdown)
		return nil, nil
	default:
		return nil, wire.UnknownOp(op)
	}
}

func (s *session) setSettings(req wire.Message) error {
	args, err := req.Map("args")
	if err != nil {
		return err
	}
	settings, err := commands.ParseSettings(args)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.settings = settings
	s.mu.Unlock()
	return nil
}

func (s *session) startCommand(req wire.Message) error {
	id, err1 := req.String("command_id")
	name, err2 := req.String("command_name")
	args, err3 := req.Map("args")
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	return s.start(s.conn.Context(), id, name, args, &remoteCommand{conn: s.conn, id: id})
}

// commandLine is a running command's line to the master, whatever the
// transport.
type commandLine interface {
	commands.Master
	// complete tells the master the command is over; failure is nil on
	// success.
	complete(ctx context.Context, failure error) error
}

// start starts the named command on a goroutine of its own; it ends with
// ctx, the connection's context.
func (s *session) start(ctx context.Context, id, name string, args map[string]any, line commandLine) error {
	cmd, err := commands.New(name, args)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.shutdown:
		return errors.New("the slave is shutting down")
	default:
	}
	if _, dup := s.running[id]; dup {
		return fmt.Errorf("command_id %q is already running", id)
	}
	s.running[id] = cmd
	settings := s.settings
	s.log.Info("starting command", "id", id, "command", name)
	s.wg.Go(func() { s.run(ctx, id, cmd, settings, line) })
	return nil
}

// run runs one command and tells the master it completed.
func (s *session) run(ctx context.Context, id string, cmd *commands.Command, settings commands.Settings, line commandLine) {
	failure := cmd.Run(ctx, line, settings)
	s.mu.Lock()
	delete(s.running, id)
	s.mu.Unlock()
	if failure != nil {
		s.log.Warn("command failed", "id", id, "command", cmd.Name(), "err", failure)
	}
	if err := line.complete(ctx, failure); err != nil && ctx.Err() == nil {
		s.log.Warn("could not report command completion", "id", id, "err", err)
	}
}

func (s *session) interruptCommand(req wire.Message) error {
	id, err := req.String("command_id")
	if err != nil {
		return err
	}
	why, _ := req.String("why") // optional
	s.interrupt(id, why)
	return nil
}

// interrupt interrupts the command with the id, if it runs.
func (s *session) interrupt(id, why string) {
	s.mu.Lock()
	cmd := s.running[id]
	s.mu.Unlock()
	if cmd == nil {
		s.log.Info("asked to interrupt a command that is not running", "id", id)
		return
	}
	s.log.Info("interrupting command", "id", id, "why", why)
	cmd.Interrupt(why)
}

// interruptAll interrupts every running command.
func (s *session) interruptAll(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cmd := range s.running {
		cmd.Interrupt(why)
	}
}

// closeOnce closes ch unless it is closed already; only the connection's
// reader goroutine calls it, so the check and the close cannot race.
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}
