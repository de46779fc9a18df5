package protocol

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/protocol/remote"

	"github.com/buildslave/buildslave/protocol/internal/capture"
	"github.com/buildslave/buildslave/protocol/wire"
)

// FuzzHandle feeds arbitrary frames to the master's handling of a slave's
// requests while an upload ("3"), a download ("4") and a shell command
// ("2") run: it must never panic, and every refusal is either an exception
// for the slave or a malformed-input error that drops the connection.
func FuzzHandle(f *testing.F) {
	for _, m := range capture.Messages() {
		b, err := wire.AppendValue(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		msg, err := wire.DecodeMessage(p)
		if err != nil {
			return // the decoder has its own fuzz target
		}
		master, _ := wire.Pipe()
		c := newConn(&Handler{}, "s1", master)
		defer c.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // updates are dropped, never waited for
		reqs := map[string]remote.Request{
			"2": {Name: "shell"},
			"3": {Name: "upload_file", Upload: &bytes.Buffer{}, Args: map[string]any{"maxsize": 10}},
			"4": {Name: "download_file", Download: strings.NewReader("content")},
		}
		c.commands = map[string]command{}
		for id, req := range reqs {
			cmd, progress, err := remote.New(ctx, req, c.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			c.commands[id] = command{progress, cmd}
		}
		_, err = c.handle(ctx, msg)
		if err != nil && !errors.Is(err, wire.ErrMalformed) && !errors.Is(err, wire.ErrUnknownOp) && !errors.Is(err, remote.ErrMaxSize) {
			t.Fatalf("unexpected kind of error: %v", err)
		}
	})
}
