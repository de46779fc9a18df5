// Package web guards the example master's web port: optional
// authentication (a bearer token, HTTP basic auth) whose wrong guesses
// cost the guesser, refusal of
// cross-origin state changes with a per-page token for the page's forms,
// bounds on what a request may make the master read, timeouts, and a cap
// on open connections.
package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/internal/guess"
	"github.com/buildslave/buildslave/slave"
)

// Defaults of Config's limits.
const (
	DefaultMaxBody           = 64 << 10
	DefaultMaxConnections    = 256
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = time.Minute
	DefaultIdleTimeout       = time.Minute
)

// TokenField is the form field, and TokenHeader the header, that carry a
// page's token with a browser's request.
const (
	TokenField  = "csrf_token"
	TokenHeader = "X-CSRF-Token"
)

// TokenLifetime is how long a page's token is accepted; the status page
// refreshes itself every 10 s, with a new one.
const TokenLifetime = time.Hour

// realm names the master in authentication challenges.
const realm = `realm="buildslave master"`

// Config is what a Guard enforces; zero fields mean their defaults.
type Config struct {
	// Token, if set, is a bearer token that authenticates a request
	// ("Authorization: Bearer TOKEN").
	Token string
	// Users, if set, are the user names and passwords of HTTP basic auth.
	// With Token or Users set, every request needs one of them.
	Users map[string]string
	// Guesses bounds the wrong credentials one remote address may send
	// (a burst of guess.DefaultBurst, then one a second, with back-off):
	// past them, its requests with credentials are refused unchecked
	// with 429 and Retry-After. Each refused request closes its
	// connection; the first refusal from an address is logged at once,
	// the others of the same minute in one line at its end.
	Guesses guess.Config
	// MaxBody bounds a request's body: a larger form is refused with 413.
	MaxBody int64
	// MaxConnections bounds the connections open at once; past it, a new
	// one takes the place of the one that has waited longest (at least
	// MinWaiting) for its next request, which is closed, and waits only
	// while none has: silent sockets cannot lock browsers out.
	MaxConnections int
	// ReadHeaderTimeout bounds the arrival of a request's headers,
	// ReadTimeout of the whole request, WriteTimeout the writing of the
	// response; IdleTimeout closes a keep-alive connection that long
	// without a new request.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// Limits logs the limits hit and the requests refused; nil means
	// limit.New(nil).
	Limits *limit.Log
	// Logger gets the refused credentials; slog.Default() if nil.
	Logger *slog.Logger
}

// Authenticated reports whether requests need credentials.
func (c Config) Authenticated() bool { return c.Token != "" || len(c.Users) > 0 }

// Guard serves handlers behind the web port's checks.
type Guard struct {
	cfg     Config
	key     []byte // signs the pages' tokens; new at every start
	cross   *http.CrossOriginProtection
	guesses *guess.Table // refused credentials per remote address
}

// New returns a Guard enforcing cfg.
func New(cfg Config) *Guard {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout}, {&cfg.ReadTimeout, DefaultReadTimeout},
		{&cfg.WriteTimeout, DefaultWriteTimeout}, {&cfg.IdleTimeout, DefaultIdleTimeout},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Limits == nil {
		cfg.Limits = limit.New(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails
	return &Guard{cfg: cfg, key: key, cross: http.NewCrossOriginProtection(), guesses: guess.New(cfg.Guesses, cfg.Logger)}
}

// Close logs the summaries of refused credentials not logged yet; call it
// once the server is shut down.
func (g *Guard) Close() { g.guesses.Close() }

// Server returns a server of next behind the guard (Handler), with the
// guard's timeouts; errorLog receives its errors.
func (g *Guard) Server(next http.Handler, errorLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           g.Handler(next),
		ConnContext:       withConn,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		ReadTimeout:       g.cfg.ReadTimeout,
		WriteTimeout:      g.cfg.WriteTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		ErrorLog:          errorLog,
	}
}

// Listener returns ln with at most MaxConnections connections open at
// once; past it, a new connection takes the place of the one that has
// waited longest (at least MinWaiting) for its next request, and Accept
// waits only while none has. Give the Server's connections no other
// wrapper: Handler tells the listener which ones are being served.
func (g *Guard) Listener(ln net.Listener) net.Listener {
	return newLimitListener(ln, g.cfg.MaxConnections, func() {
		g.cfg.Limits.Hit("http_max_connections", g.cfg.MaxConnections,
			"web connections at their cap: the one that waited longest for a request makes room")
	})
}

// Handler serves next behind the guard, in this order:
//   - when Config asks for credentials, a request without any is refused
//     with 401; one from an address that sent too many wrong ones lately
//     (Config.Guesses) with 429 and Retry-After, unchecked; one with
//     wrong credentials with 401. Either refusal closes the connection;
//   - the body is read up to MaxBody; the form of a request that may
//     change state (not GET, HEAD or OPTIONS) is parsed here, so that one
//     too large is refused with 413;
//   - such a request from another origin (Sec-Fetch-Site, else Origin
//     against Host) is refused with 403, and so is one from a browser
//     (it sends either header) without a valid page token in TokenField
//     or TokenHeader. A client that sends neither header, such as curl
//     or a script, needs no token.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer serving(r)()
		if !g.authenticate(w, r) {
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBody)
		if safe(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
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
		if err := g.sameOrigin(r); err != nil {
			g.cfg.Limits.Hit("cross_origin", "same origin and page token required", "web request refused: "+err.Error(),
				"remote", r.RemoteAddr, "path", r.URL.Path, "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// safe reports whether method only reads.
func safe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// authenticate checks r's credentials, if Config asks for them, and
// answers a refusal itself.
func (g *Guard) authenticate(w http.ResponseWriter, r *http.Request) bool {
	if !g.cfg.Authenticated() {
		return true
	}
	if r.Header.Get("Authorization") == "" { // no guess: a browser's first request
		g.cfg.Limits.Hit("http_auth", "credentials required", "web request refused: no credentials", "remote", r.RemoteAddr, "path", r.URL.Path)
		g.challenge(w)
		return false
	}
	key := guess.Key(r.RemoteAddr)
	t := g.guesses.Take(key)
	w.Header().Set("Connection", "close") // unless the credentials pass: no guessing on a kept-alive connection
	switch {
	case !t.OK:
		if g.guesses.Note(key, false, false) {
			g.cfg.Logger.Warn("web request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", "too many wrong credentials lately")
		}
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((t.RetryAfter+time.Second-1)/time.Second))))
		http.Error(w, "too many wrong credentials from your address; try again later", http.StatusTooManyRequests)
		return false
	case !g.authorized(r):
		if g.guesses.Note(key, true, !t.Reserved) {
			g.cfg.Logger.Warn("web request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", "wrong credentials")
		}
		g.challenge(w)
		return false
	}
	if t.Reserved {
		g.guesses.Refund(key)
	}
	w.Header().Del("Connection")
	return true
}

// challenge refuses a request for want of valid credentials, asking for
// the kind Config accepts.
func (g *Guard) challenge(w http.ResponseWriter) {
	if len(g.cfg.Users) > 0 {
		w.Header().Set("WWW-Authenticate", "Basic "+realm+`, charset="UTF-8"`)
	} else {
		w.Header().Set("WWW-Authenticate", "Bearer "+realm)
	}
	http.Error(w, "authentication required", http.StatusUnauthorized)
}

// authorized reports whether r carries valid credentials.
func (g *Guard) authorized(r *http.Request) bool {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return g.cfg.Token != "" && slave.PasswordsEqual(tok, g.cfg.Token)
	}
	user, pw, ok := r.BasicAuth()
	if !ok {
		return false
	}
	want, known := g.cfg.Users[user]
	// An unknown user costs the same comparison as a known one.
	return slave.PasswordsEqual(pw, want) && known
}

// sameOrigin checks a state-changing request from a browser: it must come
// from the page's own origin and carry one of its tokens.
func (g *Guard) sameOrigin(r *http.Request) error {
	if err := g.cross.Check(r); err != nil {
		return errors.New("cross-origin request refused")
	}
	if r.Header.Get("Sec-Fetch-Site") == "" && r.Header.Get("Origin") == "" {
		return nil // not a browser: curl, a script
	}
	tok := r.Header.Get(TokenHeader)
	if tok == "" {
		tok = r.PostForm.Get(TokenField)
	}
	if !g.valid(tok) {
		return errors.New("the form's token is missing or stale: reload the page")
	}
	return nil
}

// Token returns a new token for a page's forms, valid for TokenLifetime:
// when it was made and a random nonce, signed with the guard's key.
func (g *Guard) Token() string {
	b := make([]byte, 16, 16+sha256.Size)
	binary.BigEndian.PutUint64(b, uint64(time.Now().Unix()))
	_, _ = rand.Read(b[8:16]) // never fails
	return base64.RawURLEncoding.EncodeToString(g.sign(b))
}

// sign appends b's signature to b.
func (g *Guard) sign(b []byte) []byte {
	mac := hmac.New(sha256.New, g.key)
	mac.Write(b)
	return mac.Sum(b)
}

// valid reports whether tok is a token of this guard, made less than
// TokenLifetime ago.
func (g *Guard) valid(tok string) bool {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 16+sha256.Size || !hmac.Equal(g.sign(b[:16:16]), b) {
		return false
	}
	age := time.Since(time.Unix(int64(binary.BigEndian.Uint64(b)), 0))
	return age > -time.Minute && age <= TokenLifetime
}
