package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
