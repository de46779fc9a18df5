package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// offlineBuilder is a master whose builder b waits for a slave that never
// attaches: forced builds stay queued.
const offlineBuilder = `
[master]
[[slaves]]
name = "offline"
password = "pw"
[[builders]]
name = "b"
slaves = ["offline"]
  [[builders.steps]]
  shell = "true"
`

// post POSTs form to the master's path and returns the status and body.
func post(t *testing.T, m *master, path string, form url.Values, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+m.webAddr+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// TestWebBounds: request bodies, reasons and each builder's queue are
// bounded, and the builds are paged.
func TestWebBounds(t *testing.T) {
	m, out := startMaster(t, testConfig(t, offlineBuilder))
	code, body := post(t, m, "/force", url.Values{"builder": {"b"}, "reason": {strings.Repeat("x", 200<<10)}})
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 200 KiB body: %d %s", code, body)
	}
	code, body = post(t, m, "/force", url.Values{"builder": {"b"}, "reason": {strings.Repeat("x", 2000)}})
	if code != http.StatusBadRequest || !strings.Contains(body, "max_reason_length") {
		t.Errorf("a 2000-byte reason: %d %s", code, body)
	}
	for i := range 51 {
		code, body = post(t, m, "/force", url.Values{"builder": {"b"}}, "Accept", "application/json")
		if want := http.StatusAccepted; i == 50 {
			if code != http.StatusTooManyRequests || !strings.Contains(body, "max_queued_builds") {
				t.Errorf("the 51st queued build: %d %s", code, body)
			}
		} else if code != want {
			t.Fatalf("queued build %d: %d %s", i+1, code, body)
		}
	}
	for _, limit := range []string{"limit=http_max_body", "limit=max_reason_length", "limit=max_queued_builds"} {
		if n := len(out.Matching(limit)); n != 1 {
			t.Errorf("%d log lines with %s, want 1", n, limit)
		}
	}

	resp, err := http.Get("http://" + m.webAddr + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		Builds []struct{ ID int }
		Older  int
	}
	json.NewDecoder(resp.Body).Decode(&snap)
	resp.Body.Close()
	if len(snap.Builds) != 20 || snap.Builds[0].ID != 50 || snap.Older != 31 {
		t.Errorf("/api/status: %d builds from #%d, older %d; want 20 from #50, older 31", len(snap.Builds), snap.Builds[0].ID, snap.Older)
	}
}

// TestCrossSiteForceIsRefused: a form on another site cannot force a
// build; the page's own form and curl can.
func TestCrossSiteForceIsRefused(t *testing.T) {
	m, out := startMaster(t, testConfig(t, offlineBuilder))
	code, body := post(t, m, "/force", url.Values{"builder": {"b"}}, "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	if code != http.StatusForbidden {
		t.Errorf("a cross-site form: %d %s", code, body)
	}
	if n := len(m.history.Recent(10)); n != 0 {
		t.Fatalf("%d builds queued by the cross-site form", n)
	}
	if len(out.Matching("web request refused", "limit=cross_origin")) != 1 {
		t.Errorf("the refusal is not logged:\n%s", out.String())
	}

	// The page's own form, as a browser sends it.
	resp, err := http.Get("http://" + m.webAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	token := tokenRE.FindStringSubmatch(string(page))
	if token == nil {
		t.Fatalf("the page's force form has no token:\n%s", page)
	}
	origin := "http://" + m.webAddr
	code, body = post(t, m, "/force", url.Values{"builder": {"b"}, "csrf_token": {token[1]}}, "Origin", origin, "Sec-Fetch-Site", "same-origin")
	if code != http.StatusSeeOther {
		t.Errorf("the page's own form: %d %s", code, body)
	}
	code, body = post(t, m, "/force", url.Values{"builder": {"b"}}, "Origin", origin, "Sec-Fetch-Site", "same-origin")
	if code != http.StatusForbidden {
		t.Errorf("a same-origin form without the page's token: %d %s", code, body)
	}
	code, body = post(t, m, "/force?builder=b", nil) // curl -X POST, as the README shows
	if code != http.StatusSeeOther {
		t.Errorf("curl: %d %s", code, body)
	}
	if n := len(m.history.Recent(10)); n != 2 {
		t.Errorf("%d builds queued, want 2", n)
	}
}

var tokenRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// TestNonLoopbackWebNeedsAuth: a web port every host can reach needs
// credentials, or http_allow_unauthenticated; the banner says where it
// really listens.
func TestNonLoopbackWebNeedsAuth(t *testing.T) {
	cfg := testConfig(t, offlineBuilder)
	cfg.HTTP = "0.0.0.0:0"
	if m, err := start(cfg, slog.New(slog.DiscardHandler), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "http_allow_unauthenticated") {
		if m != nil {
			m.shutdown(time.Second, time.Second)
		}
		t.Fatalf("start on 0.0.0.0 without auth = %v", err)
	}
	cfg.HTTPAllowUnauthenticated = true
	_, out := startMaster(t, cfg)
	if !regexp.MustCompile(`status page: http://127\.0\.0\.1:\d+/  \(listening on (\[::\]|0\.0\.0\.0):\d+ \(every interface\), no authentication;`).MatchString(out.String()) {
		t.Errorf("the banner hides where the status page listens:\n%s", out.String())
	}
}

// TestWebAuth: with http_token_file, every request needs the token.
func TestWebAuth(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, strings.Replace(offlineBuilder, "[master]", "[master]\nhttp_token_file = \""+filepath.Join(dir, "token")+"\"", 1))
	cfg.HTTP = "0.0.0.0:0" // allowed: it needs credentials
	m, out := startMaster(t, cfg)
	for _, tc := range []struct {
		path, auth string
		code       int
	}{
		{"/", "", http.StatusUnauthorized},
		{"/api/status", "Bearer wrong", http.StatusUnauthorized},
		{"/metrics", "", http.StatusUnauthorized},
		{"/api/status", "Bearer 0123456789abcdef0123", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", "http://"+m.webAddr+tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("GET %s with %q: %s, want %d", tc.path, tc.auth, resp.Status, tc.code)
		}
	}
	if code, _ := post(t, m, "/force?builder=b", nil); code != http.StatusUnauthorized {
		t.Errorf("force without the token: %d", code)
	}
	if code, _ := post(t, m, "/force?builder=b", nil, "Authorization", "Bearer 0123456789abcdef0123"); code != http.StatusSeeOther {
		t.Errorf("force with the token: %d", code)
	}
	if !strings.Contains(out.String(), "credentials required") {
		t.Errorf("the banner does not say the page needs credentials:\n%s", out.String())
	}
}

// TestWebGuessesArePaidFor: with real sockets, each wrong token closes
// its connection, and past http_auth_burst the guesser gets 429 with
// Retry-After, even for the right token, while the first refusal is
// logged at once and the rest summarised.
func TestWebGuessesArePaidFor(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, strings.Replace(offlineBuilder, "[master]", "[master]\nhttp_auth_burst = 3\nhttp_token_file = \""+filepath.Join(dir, "token")+"\"", 1))
	m, out := startMaster(t, cfg)
	get := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+m.webAddr+"/api/status", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := range 3 {
		if resp := get(fmt.Sprint("wrong", i)); resp.StatusCode != http.StatusUnauthorized || !resp.Close {
			t.Errorf("wrong token %d: %s, closing the connection %v; want 401, closing", i, resp.Status, resp.Close)
		}
	}
	resp := get("wrong3")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Errorf("past the burst: %s, Retry-After %q, closing %v; want 429 with Retry-After, closing", resp.Status, resp.Header.Get("Retry-After"), resp.Close)
	}
	if resp := get("0123456789abcdef0123"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the right token during the block: %s, want 429", resp.Status)
	}
	if n := strings.Count(out.String(), "web request refused"); n != 1 {
		t.Errorf("%d lines about the refusals, want 1 (the rest summarised a minute later):\n%s", n, out.String())
	}
}

// rawGet sends a keep-alive GET on c and reads the response's status line
// and headers (the body of /api/status follows, unread).
func rawGet(t *testing.T, c net.Conn, r *bufio.Reader) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: master\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status
}

// closedByServer waits up to 10 s for the server to close c.
func closedByServer(t *testing.T, c net.Conn, r *bufio.Reader) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// TestWebIdleConnectionsAreClosed: with real sockets on loopback, a
// keep-alive connection left idle and one that never sends its request
// are closed by the master.
func TestWebIdleConnectionsAreClosed(t *testing.T) {
	m, _ := startMaster(t, testConfig(t, strings.Replace(offlineBuilder, "[master]", "[master]\nhttp_idle_timeout = \"1s\"\nhttp_read_header_timeout = \"1s\"", 1)))
	idle, err := net.Dial("tcp", m.webAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	r := bufio.NewReader(idle)
	if status := rawGet(t, idle, r); status != "200 OK" {
		t.Fatalf("GET: %s", status)
	}
	silent, err := net.Dial("tcp", m.webAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if !closedByServer(t, idle, r) {
		t.Error("an idle keep-alive connection is still open 10 s after http_idle_timeout (1s)")
	}
	if !closedByServer(t, silent, bufio.NewReader(silent)) {
		t.Error("a connection that sends nothing is still open 10 s after http_read_header_timeout (1s)")
	}
}

// TestWebConnectionCap: past http_max_connections, a new connection
// takes the place of the one that has waited longest for its next
// request, which the master closes.
func TestWebConnectionCap(t *testing.T) {
	m, out := startMaster(t, testConfig(t, strings.Replace(offlineBuilder, "[master]", "[master]\nhttp_max_connections = 2", 1)))
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", m.webAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if status := rawGet(t, c, bufio.NewReader(c)); status != "200 OK" {
			t.Fatalf("GET: %s", status)
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", m.webAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if status := rawGet(t, third, bufio.NewReader(third)); status != "200 OK" {
		t.Fatalf("a third connection past http_max_connections = 2: %s", status)
	}
	if len(out.Matching("limit=http_max_connections")) != 1 {
		t.Errorf("the cap is not logged:\n%s", out.String())
	}
	if !closedByServer(t, held[0], bufio.NewReader(held[0])) {
		t.Error("the connection idle longest is still open")
	}
	if status := rawGet(t, held[1], bufio.NewReader(held[1])); status != "200 OK" {
		t.Errorf("the other kept-alive connection: %s", status)
	}
}
