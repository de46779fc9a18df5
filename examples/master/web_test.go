package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
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
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
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
