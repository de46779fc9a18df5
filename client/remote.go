package client

import (
	"context"
	"fmt"

	"github.com/buildslave/buildslave/client/commands"
	"github.com/buildslave/buildslave/protocol/wire"
)

// remoteCommand is a running command's line to the master: each call is
// one request tagged with the command's id.
type remoteCommand struct {
	conn *wire.Conn
	id   string
}

var _ commands.Master = (*remoteCommand)(nil)

func (r *remoteCommand) call(ctx context.Context, op string, fields map[string]any) (any, error) {
	if fields == nil {
		fields = map[string]any{}
	}
	fields["command_id"] = r.id
	return r.conn.Call(ctx, op, fields)
}

func (r *remoteCommand) do(ctx context.Context, op string, fields map[string]any) error {
	_, err := r.call(ctx, op, fields)
	return err
}

func (r *remoteCommand) Update(ctx context.Context, pairs [][2]any) error {
	args := make([]any, len(pairs))
	for i, kv := range pairs {
		args[i] = []any{kv[0], kv[1]}
	}
	return r.do(ctx, "update", map[string]any{"args": args})
}

func (r *remoteCommand) UploadFileWrite(ctx context.Context, data []byte) error {
	return r.do(ctx, "update_upload_file_write", map[string]any{"args": data})
}

func (r *remoteCommand) UploadFileClose(ctx context.Context) error {
	return r.do(ctx, "update_upload_file_close", nil)
}

func (r *remoteCommand) UploadFileUtime(ctx context.Context, accessTime, modifiedTime float64) error {
	return r.do(ctx, "update_upload_file_utime", map[string]any{"access_time": accessTime, "modified_time": modifiedTime})
}

func (r *remoteCommand) UploadDirectoryWrite(ctx context.Context, data []byte) error {
	return r.do(ctx, "update_upload_directory_write", map[string]any{"args": data})
}

func (r *remoteCommand) UploadDirectoryUnpack(ctx context.Context) error {
	return r.do(ctx, "update_upload_directory_unpack", nil)
}

func (r *remoteCommand) ReadFile(ctx context.Context, length int) ([]byte, error) {
	res, err := r.call(ctx, "update_read_file", map[string]any{"length": length})
	switch v := res.(type) {
	case []byte:
		return v, err
	case string: // a Python master may answer text as str
		return []byte(v), err
	case nil:
		return nil, err
	}
	return nil, fmt.Errorf("update_read_file: master answered %T, want bytes", res)
}

func (r *remoteCommand) ReadFileClose(ctx context.Context) error {
	return r.do(ctx, "update_read_file_close", nil)
}

// complete tells the master the command is over; failure is nil on success.
func (r *remoteCommand) complete(ctx context.Context, failure error) error {
	var args any
	if failure != nil {
		args = failure.Error()
	}
	return r.do(ctx, "complete", map[string]any{"args": args})
}
