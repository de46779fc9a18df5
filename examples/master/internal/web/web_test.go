package web

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/internal/guess"
	"github.com/buildslave/buildslave/internal/testlog"
)

// serve sends a request to a guarded handler and returns the status, and
// whether the handler ran.
func serve(g *Guard, method, target string, form url.Values, header ...string) (int, bool) {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(method, target, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	ran := false
	rec := httptest.NewRecorder()
	g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran = true })).ServeHTTP(rec, req)
	return rec.Code, ran
}

func TestCrossOriginStateChangesAreRefused(t *testing.T) {
	var log testlog.Buffer
	g := New(Config{Limits: limit.New(slog.New(slog.NewTextHandler(&log, nil)))})
	force := url.Values{"builder": {"b"}}
	withToken := url.Values{"builder": {"b"}, TokenField: {g.Token()}}
	for _, tc := range []struct {
		name   string
		method string
		form   url.Values
		header []string
		ok     bool
	}{
		{"cross-site form", "POST", force, []string{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, false},
		{"cross-site form with a stolen token", "POST", withToken, []string{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, false},
		{"another port of the host", "POST", withToken, []string{"Origin", "http://example.com:8080", "Sec-Fetch-Site", "same-site"}, false},
		{"old browser, other origin", "POST", withToken, []string{"Origin", "http://evil.example"}, false},
		{"null origin", "POST", withToken, []string{"Origin", "null"}, false},
		{"same origin without the page's token", "POST", force, []string{"Origin", "http://example.com", "Sec-Fetch-Site", "same-origin"}, false},
		{"same origin with a forged token", "POST", url.Values{TokenField: {strings.Repeat("A", 64)}}, []string{"Sec-Fetch-Site", "same-origin"}, false},
		{"the page's own form", "POST", withToken, []string{"Origin", "http://example.com", "Sec-Fetch-Site", "same-origin"}, true},
		{"the page's token in a header", "POST", force, []string{"Sec-Fetch-Site", "same-origin", TokenHeader, g.Token()}, true},
		{"curl", "POST", force, nil, true},
		{"a cross-site GET only reads", "GET", nil, []string{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, true},
	} {
		code, ran := serve(g, tc.method, "http://example.com/force", tc.form, tc.header...)
		if ran != tc.ok || (!tc.ok && code != http.StatusForbidden) {
			t.Errorf("%s: %d, handler ran %v; want it to run: %v", tc.name, code, ran, tc.ok)
		}
	}
	if n := len(log.Matching("limit=cross_origin")); n != 1 {
		t.Errorf("%d log lines for the refusals, want 1:\n%s", n, log.String())
	}
}

func TestTokensExpire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New(Config{})
		tok := g.Token()
		post := func() bool {
			_, ran := serve(g, "POST", "http://example.com/force", url.Values{TokenField: {tok}}, "Sec-Fetch-Site", "same-origin")
			return ran
		}
		time.Sleep(TokenLifetime)
		if !post() {
			t.Error("a token is refused at the end of its lifetime")
		}
		time.Sleep(time.Second)
		if post() {
			t.Error("a stale token is accepted")
		}
		if _, ran := serve(New(Config{}), "POST", "http://example.com/force", url.Values{TokenField: {g.Token()}}, "Sec-Fetch-Site", "same-origin"); ran {
			t.Error("another guard's token is accepted (a restarted master's)")
		}
	})
}

func TestAuthentication(t *testing.T) {
	token := New(Config{Token: "0123456789abcdef"})
	basic := New(Config{Users: map[string]string{"ci": "s3cret"}, Token: "0123456789abcdef"})
	open := New(Config{})
	if open.cfg.Authenticated() || !token.cfg.Authenticated() || !basic.cfg.Authenticated() {
		t.Error("Authenticated")
	}
	for _, tc := range []struct {
		name   string
		g      *Guard
		header []string
		ok     bool
	}{
		{"no credentials", token, nil, false},
		{"wrong token", token, []string{"Authorization", "Bearer 0123456789abcdeF"}, false},
		{"token", token, []string{"Authorization", "Bearer 0123456789abcdef"}, true},
		{"basic auth where only a token works", token, []string{"Authorization", "Basic Y2k6czNjcmV0"}, false},
		{"basic auth", basic, []string{"Authorization", "Basic Y2k6czNjcmV0"}, true}, // ci:s3cret
		{"token with basic auth configured", basic, []string{"Authorization", "Bearer 0123456789abcdef"}, true},
		{"wrong password", basic, []string{"Authorization", "Basic Y2k6c2VjcmV0"}, false},
		{"unknown user", basic, []string{"Authorization", "Basic eDo="}, false}, // x: (empty password)
		{"no auth configured", open, nil, true},
	} {
		code, ran := serve(tc.g, "GET", "http://example.com/", nil, tc.header...)
		if ran != tc.ok || (!tc.ok && code != http.StatusUnauthorized) {
			t.Errorf("%s: %d, handler ran %v; want it to run: %v", tc.name, code, ran, tc.ok)
		}
	}
	rec := httptest.NewRecorder()
	basic.Handler(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("WWW-Authenticate %q: a browser would not ask for a password", got)
	}
}

func TestBodyIsBounded(t *testing.T) {
	g := New(Config{MaxBody: 100})
	if code, ran := serve(g, "POST", "http://example.com/force", url.Values{"reason": {strings.Repeat("x", 100)}}); code != http.StatusRequestEntityTooLarge || ran {
		t.Errorf("a 107-byte body: %d, handler ran %v", code, ran)
	}
	if _, ran := serve(g, "POST", "http://example.com/force", url.Values{"reason": {strings.Repeat("x", 90)}}); !ran {
		t.Error("a 97-byte body was refused")
	}
}

func TestWrongCredentialsCostTheGuesser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log testlog.Buffer
		g := New(Config{Users: map[string]string{"ci": "s3cret"}, Guesses: guess.Config{Burst: 3},
			Logger: slog.New(slog.NewTextHandler(&log, nil))})
		get := func(remote, user, password string) *httptest.ResponseRecorder {
			req := httptest.NewRequest("GET", "http://example.com/", nil)
			req.RemoteAddr = remote
			req.SetBasicAuth(user, password)
			rec := httptest.NewRecorder()
			g.Handler(http.NotFoundHandler()).ServeHTTP(rec, req)
			return rec
		}
		const guesser = "192.0.2.7:40000"
		for i := range 3 {
			rec := get(guesser, "ci", fmt.Sprint("guess", i))
			if rec.Code != http.StatusUnauthorized || rec.Header().Get("Connection") != "close" {
				t.Fatalf("wrong password %d: %d, Connection %q; want 401 closing the connection", i, rec.Code, rec.Header().Get("Connection"))
			}
		}
		rec := get(guesser, "ci", "guess3")
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" || rec.Header().Get("Connection") != "close" {
			t.Fatalf("the guess past the burst: %d, Retry-After %q, Connection %q; want 429, 1, close",
				rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("Connection"))
		}
		if rec := get(guesser, "ci", "s3cret"); rec.Code != http.StatusTooManyRequests {
			t.Errorf("the right password during the block: %d, want 429 (unchecked)", rec.Code)
		}
		if rec := get("198.51.100.1:1", "ci", "s3cret"); rec.Code != http.StatusNotFound || rec.Header().Get("Connection") == "close" {
			t.Errorf("another address: %d, Connection %q; want it served, kept alive", rec.Code, rec.Header().Get("Connection"))
		}
		time.Sleep(time.Second)
		if rec := get(guesser, "ci", "s3cret"); rec.Code != http.StatusNotFound {
			t.Errorf("the right password after the block: %d, want it served", rec.Code)
		}
		for range 20 {
			get(guesser, "x", "y")
		}
		time.Sleep(time.Minute)
		g.Close()
		if lines := log.Matching("web request refused", "reason=\"wrong credentials\""); len(lines) != 1 {
			t.Errorf("%d lines for the first refusal, want 1:\n%s", len(lines), log.String())
		}
		if lines := log.Matching("refusals from 192.0.2.7 in the last minute"); len(lines) != 1 {
			t.Errorf("%d summaries of the others, want 1:\n%s", len(lines), log.String())
		}
		if strings.Contains(log.String(), "guess") || strings.Contains(log.String(), "s3cret") {
			t.Errorf("a password was logged:\n%s", log.String())
		}
	})
}
