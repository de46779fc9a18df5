package builds

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHistoryIsBounded(t *testing.T) {
	h := NewHistory(3, 10)
	for i := range 5 {
		r := h.add("b", "test")
		s := h.step(r, "s")
		for range 5 {
			h.output(s, "0123456789")
		}
		h.stepDone(s, Success, 0)
		if i < 4 {
			h.finished(r, Success)
		}
	}
	got := h.Recent(10)
	if len(got) != 3 || got[0].ID != 5 || got[2].ID != 3 || got[0].State != Waiting || got[1].State != Success {
		t.Fatalf("Recent = %+v", got)
	}
	if out := got[0].Steps[0].Output; out != "[... 40 bytes of earlier output not shown]\n0123456789" {
		t.Errorf("output %q", out)
	}
	r := h.add("b", "one big update")
	s := h.step(r, "s")
	h.output(s, "01234")
	h.output(s, "abcdefghijklmnopqrstuvwxyz")
	if out := h.Recent(1)[0].Steps[0].Output; out != "[... 21 bytes of earlier output not shown]\nqrstuvwxyz" || cap(s.out) > 20 {
		t.Errorf("output %q kept in %d bytes", out, cap(s.out))
	}
	if got := h.Before(6, 10); len(got) != 2 || got[0].ID != 5 || got[1].ID != 4 || len(h.Before(4, 10)) != 0 || h.Before(100, 1)[0].ID != 6 {
		t.Errorf("Before = %+v", got)
	}
	if len(h.Recent(1)) != 1 || len(h.Recent(-1)) != 0 {
		t.Error("Recent(n) does not bound")
	}
}

func TestForceHandlerRefusals(t *testing.T) {
	r := NewRunner(Config{History: NewHistory(0, 0)})
	srv := httptest.NewServer(ForceHandler(r.ForceID))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/force?builder=b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %s", resp.Status)
	}
	r.SetBuilders([]Builder{{Name: "b"}})
	for _, tc := range []struct {
		query string
		code  int
	}{
		{"builder=b&reason=" + strings.Repeat("x", DefaultMaxReasonLength+1), http.StatusBadRequest},
		{"builder=nope", http.StatusNotFound},
	} {
		resp, err := http.Post(srv.URL+"/force?"+tc.query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("POST /force?%.40s: %s, want %d", tc.query, resp.Status, tc.code)
		}
	}
	r.Shutdown(t.Context())
	req, _ := http.NewRequest("POST", srv.URL+"/force?builder=b", nil)
	req.Header.Set("Accept", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "shutting down") {
		t.Errorf("force while shutting down: %s %s", resp.Status, body)
	}
}
