package builds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/examples/master/internal/termsafe"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// Errors of Runner.Force, to be tested with errors.Is.
var (
	ErrUnknownBuilder = errors.New("no such builder")
	ErrShuttingDown   = errors.New("the master is shutting down")
	ErrQueueFull      = errors.New("too many builds of this builder are waiting for a slave")
	ErrReasonTooLong  = errors.New("reason too long")
	// ErrAborted is the cause of builds still running at Shutdown's
	// deadline.
	ErrAborted = errors.New("build aborted: the master shut down")
)

// Metrics is told when builds start and finish; *status.Metrics is one.
type Metrics interface {
	BuildStarted(builder string)
	BuildFinished(builder, result string, d time.Duration)
}

// Config holds a Runner's settings.
type Config struct {
	// Manager hands out build slots; required.
	Manager *slave.Manager
	// History records the builds; required.
	History *History
	// UploadDir holds each build's uploads, in <builder>-<id>/.
	UploadDir string
	// Limits bound what builds may make the master hold.
	Limits Limits
	// LimitLog logs the limits hit; nil means limit.New(Logger).
	LimitLog *limit.Log
	// Metrics, if set, counts builds.
	Metrics Metrics
	// Progress, if set, is told of each build's progress in one line:
	// started, each output line, each step's end, the result.
	Progress func(format string, args ...any)
	// Logger gets a line per finished build; nil means slog.Default().
	Logger *slog.Logger
}

// Runner runs builds: each in a goroutine of its own, from a Force until
// its result is recorded. Its methods are safe for concurrent use.
type Runner struct {
	cfg    Config
	ctx    context.Context // cancelled with ErrAborted at Shutdown's deadline
	cancel context.CancelCauseFunc
	// waiting ends the waits for a slot with ErrShuttingDown when Shutdown
	// starts: a build that has not started is cancelled at once.
	waiting       context.Context
	cancelWaiting context.CancelCauseFunc
	wg            sync.WaitGroup

	mu       sync.Mutex
	builders map[string]Builder
	queued   map[string]int // builds waiting for a slave, by builder
	closed   bool
}

// Handle is a build started by Force.
type Handle struct {
	ID   int
	h    *History
	rec  *record
	done chan struct{}
}

// Done is closed when the build has its result.
func (h *Handle) Done() <-chan struct{} { return h.done }

// State is the build's state: Waiting, Running, or its result once Done.
func (h *Handle) State() string { return h.h.state(h.rec) }

// NewRunner returns a Runner of no builders; see SetBuilders.
func NewRunner(cfg Config) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	if cfg.LimitLog == nil {
		cfg.LimitLog = limit.New(cfg.Logger)
	}
	cfg.Limits = cfg.Limits.withDefaults()
	ctx, cancel := context.WithCancelCause(context.Background())
	waiting, cancelWaiting := context.WithCancelCause(ctx)
	return &Runner{cfg: cfg, ctx: ctx, cancel: cancel, waiting: waiting, cancelWaiting: cancelWaiting,
		builders: map[string]Builder{}, queued: map[string]int{}}
}

// SetBuilders replaces the builders; running builds go on with the ones
// they started with.
func (r *Runner) SetBuilders(bs []Builder) {
	m := make(map[string]Builder, len(bs))
	for _, b := range bs {
		m[b.Name] = b
	}
	r.mu.Lock()
	r.builders = m
	r.mu.Unlock()
}

// Builders returns the builders' names, sorted.
func (r *Runner) Builders() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(func(yield func(string) bool) {
		for name := range r.builders {
			if !yield(name) {
				return
			}
		}
	})
}

// Force starts a build of the named builder for reason. The build waits
// for a slot on one of the builder's slaves (substantiating a latent one)
// in its own goroutine. It refuses a reason longer than MaxReasonLength,
// and a build when MaxQueuedBuilds of the builder wait already.
func (r *Runner) Force(builder, reason string) (*Handle, error) {
	return r.ForceOn(builder, reason, nil)
}

// ForceID is Force for ForceHandler: it returns the build's number.
func (r *Runner) ForceID(builder, reason string) (any, error) {
	h, err := r.Force(builder, reason)
	if err != nil {
		return nil, err
	}
	return h.ID, nil
}

// ForceOn is Force on the given slaves only (nil: any of the builder's),
// for a build that another master queued and this one claimed for slaves
// it holds.
func (r *Runner) ForceOn(builder, reason string, slaves []string) (*Handle, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := r.check(builder, reason)
	if err != nil {
		return nil, err
	}
	if lim := r.cfg.Limits; r.queued[builder] >= lim.MaxQueuedBuilds {
		r.cfg.LimitLog.Hit("max_queued_builds", lim.MaxQueuedBuilds, "force refused: queue full", "builder", builder)
		return nil, fmt.Errorf("%w: %d wait already (max_queued_builds)", ErrQueueFull, r.queued[builder])
	}
	if slaves != nil {
		b.Slaves = slaves
	}
	r.queued[builder]++
	rec := r.cfg.History.add(b.Name, reason)
	h := &Handle{ID: rec.ID, h: r.cfg.History, rec: rec, done: make(chan struct{})}
	r.wg.Go(func() {
		defer close(h.done)
		r.run(b, rec)
	})
	return h, nil
}

// Check says whether a build of builder for reason would be refused for
// its builder or its reason (or because the runner shuts down), and returns
// the builder's slaves: what a master checks before it queues a build for
// another master.
func (r *Runner) Check(builder, reason string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := r.check(builder, reason)
	return b.Slaves, err
}

// check is Check; r.mu is held.
func (r *Runner) check(builder, reason string) (Builder, error) {
	lim := r.cfg.Limits
	b, ok := r.builders[builder]
	switch {
	case r.closed:
		return Builder{}, ErrShuttingDown
	case !ok:
		return Builder{}, fmt.Errorf("%w: %q", ErrUnknownBuilder, builder)
	case len(reason) > lim.MaxReasonLength:
		r.cfg.LimitLog.Hit("max_reason_length", lim.MaxReasonLength, "force refused: reason too long", "builder", builder, "bytes", len(reason))
		return Builder{}, fmt.Errorf("%w: %d bytes, at most %d (max_reason_length)", ErrReasonTooLong, len(reason), lim.MaxReasonLength)
	}
	return b, nil
}

// Shutdown refuses new builds, cancels those still waiting for a slot and
// waits for running ones to end. At ctx's end it aborts them with
// ErrAborted, waits until they have recorded that, and returns ctx's
// error.
func (r *Runner) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancelWaiting(ErrShuttingDown)
	done := make(chan struct{})
	go func() { // ends with the builds, which the abort below ends
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		r.cancel(ErrAborted)
		<-done
		return ctx.Err()
	}
}

// run runs one build to its result.
func (r *Runner) run(b Builder, rec *record) {
	h, log := r.cfg.History, r.cfg.Logger.With("builder", b.Name, "build", rec.ID)
	slot, err := r.cfg.Manager.Acquire(r.waiting, b.Slaves...)
	r.mu.Lock()
	r.queued[b.Name]--
	r.mu.Unlock()
	if err != nil {
		h.finished(rec, Exception)
		if cause := context.Cause(r.waiting); cause != nil {
			log.Info("build cancelled before it started", "reason", cause)
			r.cfg.Progress("%s #%d: cancelled before it started: %v", b.Name, rec.ID, cause)
			return
		}
		log.Warn("build got no slave", "err", err)
		r.cfg.Progress("%s #%d: no slave: %v", b.Name, rec.ID, err)
		return
	}
	defer slot.Release()
	h.started(rec, slot.Slave())
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.BuildStarted(b.Name)
	}
	r.cfg.Progress("%s #%d: started on %s (%s)", b.Name, rec.ID, slot.Slave(), termsafe.Line(rec.Reason))

	// The build ends when its slave is lost or the runner aborts it.
	ctx, cancel := context.WithCancelCause(slot.Context())
	defer cancel(nil)
	defer context.AfterFunc(r.ctx, func() { cancel(context.Cause(r.ctx)) })()

	bd := &build{r: r, b: b, rec: rec}
	result := Success
	for _, st := range b.Steps {
		result = bd.step(ctx, slot, st)
		if result != Success {
			break
		}
	}
	h.finished(rec, result)
	d := time.Since(slot.Started())
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.BuildFinished(b.Name, result, d)
	}
	log.Info("build finished", "slave", slot.Slave(), "result", result, "duration", d.Round(time.Millisecond))
	r.cfg.Progress("%s #%d: %s on %s after %v", b.Name, rec.ID, result, slot.Slave(), d.Round(time.Millisecond))
}

// commandConn is a slave connection that runs remote commands: every
// transport's connection is one.
type commandConn interface {
	slave.Conn
	remote.Commander
}

// build is a build being run: its builder, its record, and how much of
// its output went to the progress lines.
type build struct {
	r       *Runner
	b       Builder
	rec     *record
	printed int64 // bytes of output printed, for the whole build
	hidden  int64 // bytes of the current step's output not printed
}

// step runs one step and returns its result.
func (bd *build) step(ctx context.Context, slot *slave.Build, st Step) string {
	r, h := bd.r, bd.r.cfg.History
	sr := h.step(bd.rec, st.Name)
	conn, ok := slot.Conn().(commandConn)
	if !ok {
		h.output(sr, fmt.Sprintf("slave %s has no connection that runs commands\n", slot.Slave()))
		h.stepDone(sr, Exception, -1)
		return Exception
	}
	rc, err := bd.remote(ctx, conn, st, sr)
	result := Success
	switch {
	case err != nil:
		result = Exception
		h.output(sr, fmt.Sprintf("\n[%s]\n", err))
	case rc != 0:
		result = Failure
	}
	h.stepDone(sr, result, rc)
	bd.stepEnd(st.Name)
	r.cfg.Progress("%s #%d: step %q: %s (rc %d)%s", bd.b.Name, bd.rec.ID, st.Name, result, rc, errSuffix(err))
	return result
}

// errSuffix is ": " and err on one line, or "" for no error.
func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return ": " + termsafe.Line(err.Error())
}
