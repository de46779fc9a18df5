// Package web guards the example master's web port: it bounds what a
// request may make the master read.
package web

import (
	"errors"
	"net/http"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
)

// DefaultMaxBody bounds a request's body unless Config.MaxBody says
// otherwise.
const DefaultMaxBody = 64 << 10

// Config is what a Guard enforces; zero fields mean their defaults.
type Config struct {
	// MaxBody bounds a request's body: a larger form is refused with 413.
	MaxBody int64
	// Limits logs the limits hit; nil means limit.New(nil).
	Limits *limit.Log
}

// Guard serves handlers behind the web port's limits.
type Guard struct {
	cfg Config
}

// New returns a Guard enforcing cfg.
func New(cfg Config) *Guard {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Limits == nil {
		cfg.Limits = limit.New(nil)
	}
	return &Guard{cfg: cfg}
}

// Handler serves next behind the guard. A request's body is read up to
// MaxBody; the form of a request that may change state (not GET, HEAD or
// OPTIONS) is parsed here, so that one too large is refused with 413
// before next runs.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBody)
		if !safe(r.Method) {
			if err := r.ParseForm(); err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					g.cfg.Limits.Hit("http_max_body", limit.Bytes(g.cfg.MaxBody), "request refused: body too large",
						"remote", r.RemoteAddr, "path", r.URL.Path)
					http.Error(w, "request body larger than http_max_body ("+limit.Bytes(g.cfg.MaxBody)+")", http.StatusRequestEntityTooLarge)
					return
				}
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// safe reports whether method only reads.
func safe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}
