package protocol

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/protocol/internal/runqueue"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// Manager is what a Handler needs of the slave manager; *slave.Manager
// implements it.
type Manager interface {
	// Login checks a login and holds the name until ctx is done; any
	// error refuses it. It logs the refusal itself.
	Login(ctx context.Context, name string, proof slave.Proof, remoteAddr string) error
	// Attach registers an authenticated, set-up connection; an error
	// refuses it.
	Attach(ctx context.Context, name string, c slave.Conn) error
}

var _ Manager = (*slave.Manager)(nil)

// Defaults for the zero values of Handler's fields.
const (
	DefaultStepTimeout   = 10 * time.Second
	DefaultAttachTimeout = time.Minute
	DefaultMaxAttaching  = 256
)

// Settings are the output settings the master sends to each slave with
// set_worker_settings. The zero value means the stock master's values.
type Settings struct {
	BufferSize    int           // bytes of output a slave collects before sending; 65536 if 0
	BufferTimeout time.Duration // how long it holds output before sending; 5 s if 0
	NewlineRE     string        // regex of line breaks in output; the stock one if ""
	MaxLineLength int           // longer lines are split; 4096 if 0
}

// StockNewlineRE is the newline regex of the stock master: CR LF, a CR not
// at the end of the buffer, cursor movements and runs of backspaces.
const StockNewlineRE = `(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)`

func (s Settings) args() map[string]any {
	if s.BufferSize <= 0 {
		s.BufferSize = 64 << 10
	}
	if s.BufferTimeout <= 0 {
		s.BufferTimeout = 5 * time.Second
	}
	if s.NewlineRE == "" {
		s.NewlineRE = StockNewlineRE
	}
	if s.MaxLineLength <= 0 {
		s.MaxLineLength = 4096
	}
	return map[string]any{
		"buffer_size":     s.BufferSize,
		"buffer_timeout":  int64(s.BufferTimeout.Seconds()),
		"newline_re":      s.NewlineRE,
		"max_line_length": s.MaxLineLength,
	}
}

// Handler accepts slave connections: it is the http.Handler of the
// protocol's WebSocket endpoint (any path). Each attached connection is
// registered with the manager as a *Conn, which is a remote.Commander: the
// application runs a build's commands with
// remote.Start(ctx, build.Conn(), req), whichever transport the slave
// attached over. Set Manager; the other fields are optional and must not
// change once serving starts.
//
// Each connection is authenticated with HTTP Basic auth through
// Manager.Login (401 for a missing header, an unknown name or a wrong
// password; 400 for a header that cannot be parsed; 429 for an address
// with too many refused logins lately; 409 while another connection under
// the name is still attaching; the connection is closed after any
// refusal), upgraded, set up and attached on its own: no lock is shared
// between attaches and every step has a deadline. Once attached, a
// connection costs one goroutine, which reads its messages.
type Handler struct {
	Manager Manager
	// Builders names the builder directories created under each slave's
	// base directory when it attaches, as the stock master does.
	Builders []string
	Settings Settings
	// StepTimeout bounds each request of the attach sequence; a slave that
	// does not answer in time is dropped. DefaultStepTimeout if 0.
	StepTimeout time.Duration
	// AttachTimeout bounds the whole attach sequence, including the
	// manager's check of a duplicate name. DefaultAttachTimeout if 0.
	AttachTimeout time.Duration
	// MaxAttaching bounds how many connections run their attach sequence
	// at once; the others wait their turn in arrival order, upgraded,
	// holding no goroutine, and their sequence's deadlines start with it.
	// A storm of slaves dialing at once then takes the memory of
	// MaxAttaching attaches in flight, not of every slave's. An attach
	// takes four round trips to the slave: with slaves far away, raise
	// it (at 100 ms a round trip, the default lets 640 attach a second).
	// DefaultMaxAttaching if 0.
	MaxAttaching int
	// WebSocket sets message size limit, write timeout, buffer size,
	// decoding limits and the memory budget that all connections'
	// messages share (WebSocket.Budget): nil means a budget of
	// budget.DefaultSize of the Handler's own. A master with several
	// transports may give them one.
	WebSocket wire.WebSocketConfig
	// Logger gets one line per connection that fails or misbehaves;
	// slog.Default() if nil.
	Logger *slog.Logger

	attaching      runqueue.Queue // attach sequences, MaxAttaching at a time
	settingsOnce   sync.Once
	settingsFields map[string]any // set_worker_settings' fields

	mu     sync.Mutex
	budget *budget.Budget     // WebSocket.Budget, or the Handler's own
	conns  map[*Conn]struct{} // open connections
	active int                // upgrades and connections in progress
	closed bool
	idle   chan struct{} // closed when active drops to zero after closing
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

// settings are the fields of every slave's set_worker_settings request,
// made once.
func (h *Handler) settings() map[string]any {
	h.settingsOnce.Do(func() { h.settingsFields = map[string]any{"args": h.Settings.args()} })
	return h.settingsFields
}

func (h *Handler) maxAttaching() int {
	if h.MaxAttaching <= 0 {
		return DefaultMaxAttaching
	}
	return h.MaxAttaching
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// errHandlerClosed is the cause of connections closed by Handler.Close.
var errHandlerClosed = errors.New("protocol handler closed")

// ServeHTTP authenticates and upgrades one slave connection, which goes on
// in a goroutine of its own until it ends or the Handler shuts down.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.logger()
	if r.Header.Get("Authorization") == "" {
		log.Warn("slave connection refused", "remote", r.RemoteAddr, "reason", "no Authorization header")
		refuse(w, http.StatusUnauthorized, "authorization required")
		return
	}
	name, password, ok := r.BasicAuth()
	if !ok {
		log.Warn("slave connection refused", "remote", r.RemoteAddr, "reason", "unparsable Authorization header")
		refuse(w, http.StatusBadRequest, "bad authorization header")
		return
	}
	// The manager holds the name from here until the attach is over.
	login, endLogin := context.WithCancel(context.Background())
	if err := h.Manager.Login(login, name, slave.Password(password), r.RemoteAddr); err != nil {
		endLogin()
		switch {
		case errors.Is(err, slave.ErrTooManyRefusals):
			refuse(w, http.StatusTooManyRequests, "too many refused logins; try again later")
		case errors.Is(err, slave.ErrAttaching):
			refuse(w, http.StatusConflict, "another connection under this name is still attaching")
		case errors.Is(err, slave.ErrClosed):
			refuse(w, http.StatusServiceUnavailable, "master shutting down")
		default:
			refuse(w, http.StatusUnauthorized, "unauthorized")
		}
		return
	}
	up := wire.Upgrader{WebSocketConfig: h.WebSocket}
	h.mu.Lock()
	closed := h.closed
	if !closed {
		h.active++
	}
	if h.budget == nil {
		if h.budget = h.WebSocket.Budget; h.budget == nil {
			h.budget = budget.New(0, 0)
		}
	}
	up.Budget = h.budget
	h.mu.Unlock()
	if closed {
		endLogin()
		http.Error(w, "master shutting down", http.StatusServiceUnavailable)
		return
	}
	t, err := up.Upgrade(w, r)
	if err != nil {
		endLogin()
		log.Warn("slave connection failed", "slave", name, "remote", r.RemoteAddr, "reason", err.Error())
		h.leave()
		return
	}
	if nc := netConnOf(w); nc != nil {
		connlimit.Admit(nc) // logged in: no longer counts against Server.Limiter
	}
	c := newConn(h, name, t)
	c.endLogin = endLogin
	if !h.track(c) {
		c.w.CloseWithCause(errHandlerClosed)
	}
	// The connection goes on in a goroutine of its own, owned by h
	// (Shutdown waits for it), and this one returns, so that net/http
	// frees its request and ends its goroutine before the attach
	// sequence: a slave then costs one goroutine and little else.
	c.serve(func() {
		h.untrack(c)
		h.leave()
	})
}

// netConnOf is the connection a request came on, as a Server accepted it;
// nil for a request served otherwise.
func netConnOf(w http.ResponseWriter) net.Conn {
	if rw, ok := w.(*responseWriter); ok {
		return rw.netConn
	}
	return nil
}

// refuse answers a refused login and closes the connection after the
// answer, so that a guesser cannot reuse it for its next guess.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Connection", "close")
	http.Error(w, msg, status)
}

// leave ends an upgrade that failed or a connection that ended.
func (h *Handler) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active--
	if h.closed && h.active == 0 && h.idle != nil {
		close(h.idle)
		h.idle = nil
	}
}

func (h *Handler) track(c *Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	if h.conns == nil {
		h.conns = make(map[*Conn]struct{})
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *Handler) untrack(c *Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

// Shutdown refuses new connections (503), drops every open one and waits
// until their goroutines have returned, or returns ctx's error at its
// deadline. Running builds learn of the loss through the manager; to let
// them finish first, shut the manager down before the handler.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	conns := make([]*Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	var idle chan struct{}
	if h.active > 0 {
		if h.idle == nil {
			h.idle = make(chan struct{})
		}
		idle = h.idle
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.w.CloseWithCause(errHandlerClosed)
	}
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close is Shutdown without a deadline: connections end promptly once
// dropped.
func (h *Handler) Close() error { return h.Shutdown(context.Background()) }
