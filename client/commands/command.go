package commands

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Version is the command version this slave reports for every command in
// worker_commands, as the stock slave 3.x does.
const Version = "3.1"

// parsers maps each command name, in both spellings the stock slave
// accepts, to the function that reads its args.
var parsers = map[string]func(argMap) (runner, error){
	"shell":            parseShell,
	"mkdir":            parseMkdir,
	"rmdir":            parseRmdir,
	"listdir":          parseListdir,
	"stat":             parseStat,
	"glob":             parseGlob,
	"rmfile":           parseRmfile,
	"cpdir":            parseCpdir,
	"upload_file":      parseUploadFile,
	"uploadFile":       parseUploadFile,
	"upload_directory": parseUploadDirectory,
	"uploadDirectory":  parseUploadDirectory,
	"download_file":    parseDownloadFile,
	"downloadFile":     parseDownloadFile,
}

// runner is a parsed command. run reports everything through j, sends rc
// before it returns, and returns an error only when the command failed in
// a way the master should see as a failure rather than as an rc.
type runner interface {
	run(ctx context.Context, j *job) error
}

// job is what a runner works with while it runs.
type job struct {
	m           Master
	out         *output
	interrupted <-chan struct{}
	why         func() string
}

// Names returns the names of all commands this slave runs, sorted.
func Names() []string {
	names := make([]string, 0, len(parsers))
	for n := range parsers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Command is one remote command read from a start_command request. Run
// executes it once; Interrupt may be called at any time from any goroutine.
type Command struct {
	name string
	r    runner

	once        sync.Once
	interrupted chan struct{}
	mu          sync.Mutex
	why         string
}

// New is Limits.New with the default limits.
func New(name string, args map[string]any) (*Command, error) { return Limits{}.New(name, args) }

// New checks the command name and its args, which must keep within l; an
// error is what the master should get as the start_command exception.
func (l Limits) New(name string, args map[string]any) (*Command, error) {
	parse, ok := parsers[name]
	if !ok {
		return nil, fmt.Errorf("unrecognized WorkerCommand '%s'", name)
	}
	err := l.withDefaults().checkArgs(argMap(args))
	var r runner
	if err == nil {
		r, err = parse(argMap(args))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Command{name: name, r: r, interrupted: make(chan struct{})}, nil
}

// Name returns the command's name as the master sent it.
func (c *Command) Name() string { return c.name }

// Interrupt asks the running command to stop (a process gets its interrupt
// signal); the command still reports rc and completes. Later calls do
// nothing.
func (c *Command) Interrupt(why string) {
	c.once.Do(func() {
		c.mu.Lock()
		c.why = why
		c.mu.Unlock()
		close(c.interrupted)
	})
}

// Run executes the command, sending its updates (always rc, then elapsed)
// through m, batched as s says. It returns when everything is sent; a
// non-nil error is the failure text for the "complete" message. Cancelling
// ctx (the connection is gone) kills a running process without reporting.
func (c *Command) Run(ctx context.Context, m Master, s Settings) error {
	start := time.Now()
	out, err := newOutput(ctx, m, s)
	if err != nil {
		return err
	}
	j := &job{m: m, out: out, interrupted: c.interrupted, why: func() string {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.why
	}}
	runErr := c.r.run(ctx, j)
	out.endStreams()
	out.send("elapsed", time.Since(start).Seconds())
	if err := out.close(); err != nil && runErr == nil {
		return err
	}
	return runErr
}
