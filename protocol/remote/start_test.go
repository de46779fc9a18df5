package remote

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/slave"
)

// commanderConn is a slave.Conn that runs commands.
type commanderConn struct {
	slave.Conn
	got Request
}

func (c *commanderConn) Start(ctx context.Context, req Request) (*Command, error) {
	c.got = req
	cmd, _, err := New(ctx, req, ctx, nil)
	return cmd, err
}

type plainConn struct{ slave.Conn }

func TestStartRunsOnCommandersAndRefusesOthers(t *testing.T) {
	ctx := context.Background()
	c := &commanderConn{}
	cmd, err := Start(ctx, c, Request{Name: "shell", Builder: "b1"})
	if err != nil || cmd == nil || c.got.Name != "shell" || c.got.Builder != "b1" {
		t.Errorf("Start on a Commander = %v, %v; it got %+v", cmd, err, c.got)
	}
	for _, conn := range []slave.Conn{plainConn{}, nil} {
		cmd, err := Start(ctx, conn, Request{Name: "shell"})
		if cmd != nil || !errors.Is(err, ErrNoCommands) || !strings.Contains(err.Error(), "not a remote.Commander") {
			t.Errorf("Start on %T = %v, %v; want an error wrapping ErrNoCommands", conn, cmd, err)
		}
	}
}
