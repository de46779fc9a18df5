package commands

import "fmt"

// Defaults for the zero fields of Limits: 16 times what a stock master
// sends (file transfers in blocks of 16–256 KiB, output batches of 64 KiB,
// lines of 4096 characters), and a block of 1 MiB fits in one message of the
// 2 MiB a master reads by default.
const (
	DefaultBlockSizeLimit  = 1 << 20
	DefaultBufferSizeLimit = 1 << 20
	DefaultLineLengthLimit = 64 << 10
	DefaultLogfilesLimit   = 64
)

// Limits bounds the sizes a master may ask of this slave, so that a master
// cannot make it allocate without bound (a blocksize of 1<<40 used to
// exhaust its memory): a start_command or set_worker_settings asking for
// more is refused, before anything is allocated, with an error naming the
// argument and the limit. The zero value means the defaults.
type Limits struct {
	BlockSize  int // largest blocksize of a file transfer, in bytes
	BufferSize int // largest buffer_size of set_worker_settings, in bytes
	LineLength int // largest max_line_length of set_worker_settings, in characters
	Logfiles   int // most logfiles one shell command watches
}

func (l Limits) withDefaults() Limits {
	if l.BlockSize <= 0 {
		l.BlockSize = DefaultBlockSizeLimit
	}
	if l.BufferSize <= 0 {
		l.BufferSize = DefaultBufferSizeLimit
	}
	if l.LineLength <= 0 {
		l.LineLength = DefaultLineLengthLimit
	}
	if l.Logfiles <= 0 {
		l.Logfiles = DefaultLogfilesLimit
	}
	return l
}

// limitError is the refusal of a size over its limit.
func limitError(arg string, n int, unit string, limit int, field string) error {
	return fmt.Errorf("%s %d is over this slave's limit of %d %s (commands.Limits.%s)", arg, n, limit, unit, field)
}

// checkArgs refuses start_command args that size an allocation beyond l:
// the blocksize of the file transfers, the logfiles of shell.
func (l Limits) checkArgs(a argMap) error {
	if a["blocksize"] != nil {
		n, err := a.int("blocksize", 0)
		if err != nil {
			return err
		}
		if n > l.BlockSize {
			return limitError("blocksize", n, "bytes", l.BlockSize, "BlockSize")
		}
	}
	if m, ok := a["logfiles"].(map[string]any); ok && len(m) > l.Logfiles {
		return limitError("logfiles: the number of files", len(m), "files", l.Logfiles, "Logfiles")
	}
	return nil
}

// checkSettings refuses settings beyond l.
func (l Limits) checkSettings(s Settings) error {
	if s.BufferSize > l.BufferSize {
		return limitError("buffer_size", s.BufferSize, "bytes", l.BufferSize, "BufferSize")
	}
	if s.MaxLineLength > l.LineLength {
		return limitError("max_line_length", s.MaxLineLength, "characters", l.LineLength, "LineLength")
	}
	return nil
}
