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
	if len(h.Recent(1)) != 1 || len(h.Recent(-1)) != 0 {
		t.Error("Recent(n) does not bound")
	}
}

func TestForceHandlerRefusals(t *testing.T) {
	r := NewRunner(Config{History: NewHistory(0, 0)})
	srv := httptest.NewServer(ForceHandler(r))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/force?builder=b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %s", resp.Status)
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
