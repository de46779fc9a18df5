package commands

import "context"

// Master is what a running command needs from the master: every method is
// one request on the connection, tagged with the command's id, and returns
// when the master has answered (or the context ends).
//
// Update carries a list of [key, value] pairs. The values of "stdout",
// "stderr" and "header" are [text, [newline offsets], [per-line times]];
// "log" carries [logname, [text, offsets, times]]; "rc", "elapsed",
// "files" and "stat" are passed through as they are.
type Master interface {
	Update(ctx context.Context, pairs [][2]any) error
	UploadFileWrite(ctx context.Context, data []byte) error
	UploadFileClose(ctx context.Context) error
	UploadFileUtime(ctx context.Context, accessTime, modifiedTime float64) error
	UploadDirectoryWrite(ctx context.Context, data []byte) error
	UploadDirectoryUnpack(ctx context.Context) error
	ReadFile(ctx context.Context, length int) ([]byte, error)
	ReadFileClose(ctx context.Context) error
}
