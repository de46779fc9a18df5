package status_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/examples/master/internal/web"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// guarded is the fixture's manager behind a Status whose forms carry the
// tokens of a real web guard, served behind that guard, as the example
// master serves it.
func guarded(t *testing.T, f *fixture) http.Handler {
	t.Helper()
	guard := web.New(web.Config{Limits: limit.New(quiet)})
	st := status.New(status.Config{Manager: f.m, Lifecycle: f.lifecycle, FormToken: guard.Token,
		MaxReasonLength: 64, Registry: prometheus.NewRegistry(), Logger: quiet})
	t.Cleanup(st.Close)
	return guard.Handler(st.Handler())
}

// browser sends what a browser sends from the page's own origin: a form
// POST with Origin and Sec-Fetch-Site, the form's fields in the body.
func browser(h http.Handler, path string, form url.Values, site string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", site)
	origin := "http://example.com" // httptest's Host
	if site == "cross-site" {
		origin = "http://evil.example"
	}
	req.Header.Set("Origin", origin)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// formOf returns the action and the hidden fields of the form posting to
// an action ending in suffix, in page.
func formOf(t *testing.T, page, suffix string) (string, url.Values) {
	t.Helper()
	form := regexp.MustCompile(`(?s)<form[^>]* action="([^"]*` + regexp.QuoteMeta(suffix) + `)">(.*?)</form>`).FindStringSubmatch(page)
	if form == nil {
		t.Fatalf("no form posting to *%s in\n%s", suffix, page)
	}
	fields := url.Values{}
	for _, in := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(form[2], -1) {
		fields.Set(in[1], in[2])
	}
	return form[1], fields
}

// slaveJSON returns the named slave's row of "/api/status".
func slaveJSON(t *testing.T, h http.Handler, name string) status.Slave {
	t.Helper()
	var snap status.Snapshot
	if err := json.Unmarshal(get(t, h, "/api/status").Body.Bytes(), &snap); err != nil {
		t.Fatal(err)
	}
	for _, s := range snap.Slaves {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no slave %q in /api/status", name)
	return status.Slave{}
}

func TestControlsFromThePage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{}, &recorder{})
		conn := slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{})
		h := guarded(t, f)

		// The page links to the pause form, which asks for a reason on a
		// page of its own, with the page's token.
		row := rowOf(t, get(t, h, "/").Body.String(), "slave-bot-linux")
		if !strings.Contains(row, `href="slaves/bot-linux/pause"`) {
			t.Fatalf("no pause link in the row:\n%s", row)
		}
		action, fields := formOf(t, get(t, h, "/slaves/bot-linux/pause").Body.String(), "pause")
		if action != "pause" || fields.Get(web.TokenField) == "" {
			t.Fatalf("pause form: action %q, fields %v", action, fields)
		}
		fields.Set("reason", "disk <full>")
		rec := browser(h, "/slaves/bot-linux/pause", fields, "same-origin")
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/" {
			t.Fatalf("pause from the form: %d %s", rec.Code, rec.Body)
		}
		if st, _ := f.m.State("bot-linux"); !st.Paused {
			t.Fatal("the slave is not paused")
		}
		if s := slaveJSON(t, h, "bot-linux"); s.State != "paused" || !s.Paused || s.Pause == nil || s.Pause.Reason != "disk <full>" || s.Pause.Since.IsZero() {
			t.Errorf("JSON row %+v, pause %+v", s, s.Pause)
		}
		page := get(t, h, "/").Body.String()
		row = rowOf(t, page, "slave-bot-linux")
		if !strings.Contains(row, ">paused<") || !strings.Contains(row, "paused: disk &lt;full&gt;") {
			t.Errorf("the row does not show the pause and its reason:\n%s", row)
		}

		// Unpause, with the button of the page.
		action, fields = formOf(t, row, "/unpause")
		if rec := browser(h, "/"+action, fields, "same-origin"); rec.Code != http.StatusSeeOther {
			t.Fatalf("unpause from the form: %d %s", rec.Code, rec.Body)
		}
		if s := slaveJSON(t, h, "bot-linux"); s.State != "attached" || s.Paused || s.Pause != nil {
			t.Errorf("after unpause: %+v, pause %+v", s, s.Pause)
		}

		// Graceful shutdown, with the button of the page: the slave is
		// asked to shut down, having no build.
		action, fields = formOf(t, rowOf(t, get(t, h, "/").Body.String(), "slave-bot-linux"), "/shutdown")
		if rec := browser(h, "/"+action, fields, "same-origin"); rec.Code != http.StatusSeeOther {
			t.Fatalf("shutdown from the form: %d %s", rec.Code, rec.Body)
		}
		synctest.Wait()
		if !conn.ShutdownRequested() {
			t.Error("the slave was not asked to shut down")
		}
		// The fake slave closed its connection, as a stock one exits.
		row = rowOf(t, get(t, h, "/").Body.String(), "slave-bot-linux")
		if !strings.Contains(row, ">detached<") || strings.Contains(row, "/shutdown") {
			t.Errorf("the row after shutdown:\n%s", row)
		}
	})
}

func TestControlsRefuseOtherSites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{}, &recorder{})
		slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{})
		h := guarded(t, f)
		_, fields := formOf(t, get(t, h, "/slaves/bot-linux/pause").Body.String(), "pause")
		noToken := url.Values{"reason": {"no token"}}
		for _, tc := range []struct {
			name, path, site string
			form             url.Values
		}{
			{"another site, with a stolen token", "/slaves/bot-linux/pause", "cross-site", fields},
			{"another site, without a token", "/slaves/bot-linux/shutdown", "cross-site", noToken},
			{"a browser without the page's token", "/slaves/bot-linux/pause", "same-origin", noToken},
			{"a browser with a forged token", "/slaves/bot-linux/pause", "same-origin", url.Values{web.TokenField: {"forged"}}},
		} {
			if rec := browser(h, tc.path, tc.form, tc.site); rec.Code != http.StatusForbidden {
				t.Errorf("%s: %d %s, want 403", tc.name, rec.Code, rec.Body)
			}
		}
		if st, _ := f.m.State("bot-linux"); st.Paused || st.ShuttingDown {
			t.Errorf("a refused POST acted: %+v", st)
		}
	})
}

// api sends what curl sends: no browser headers, JSON accepted.
func api(h http.Handler, path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, nil)
	req.Header.Set("Accept", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestControlsJSONAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{}, &recorder{})
		conn := slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{})
		h := guarded(t, f)

		rec := api(h, "/slaves/bot-linux/pause?reason="+url.QueryEscape("kernel upgrade"))
		var s status.Slave
		if err := json.Unmarshal(rec.Body.Bytes(), &s); rec.Code != http.StatusOK || err != nil {
			t.Fatalf("pause: %d %s (%v)", rec.Code, rec.Body, err)
		}
		if s.Name != "bot-linux" || s.State != "paused" || s.Pause == nil || s.Pause.Reason != "kernel upgrade" {
			t.Errorf("pause answered %+v, pause %+v", s, s.Pause)
		}
		// Pausing again replaces the reason.
		api(h, "/slaves/bot-linux/pause?reason=still+upgrading")
		if s := slaveJSON(t, h, "bot-linux"); s.Pause == nil || s.Pause.Reason != "still upgrading" {
			t.Errorf("second pause: %+v", s.Pause)
		}
		// A pause without a reason says where it came from.
		api(h, "/slaves/local1/pause")
		if s := slaveJSON(t, h, "local1"); !s.Paused || s.Pause == nil || !strings.HasPrefix(s.Pause.Reason, "paused from ") {
			t.Errorf("pause without a reason: %+v", s.Pause)
		}

		for _, tc := range []struct {
			path string
			code int
		}{
			{"/slaves/nobody/pause", http.StatusNotFound},
			{"/slaves/bot-linux/reboot", http.StatusNotFound},
			{"/slaves/bot-linux/pause?reason=" + strings.Repeat("x", 65), http.StatusBadRequest},
			{"/slaves/bot-solaris/shutdown", http.StatusConflict}, // never attached
		} {
			rec := api(h, tc.path)
			var e struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); rec.Code != tc.code || err != nil || e.Error == "" {
				t.Errorf("POST %s: %d %s, want %d with an error", tc.path, rec.Code, rec.Body, tc.code)
			}
		}
		if s := slaveJSON(t, h, "bot-linux"); s.Pause == nil || s.Pause.Reason != "still upgrading" {
			t.Errorf("a refused pause changed the reason: %+v", s.Pause)
		}
		if rec := get(t, h, "/slaves/bot-linux/pause"); !strings.Contains(rec.Body.String(), `maxlength="64"`) {
			t.Errorf("the pause form does not bound the reason:\n%s", rec.Body)
		}
		req := httptest.NewRequest(http.MethodGet, "/slaves/nobody/pause", nil)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound {
			t.Errorf("pause form of an unknown slave: %d", rec.Code)
		}

		if rec := api(h, "/slaves/bot-linux/unpause"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"state":"attached"`) {
			t.Errorf("unpause: %d %s", rec.Code, rec.Body)
		}
		if s := slaveJSON(t, h, "bot-linux"); s.Paused || s.Pause != nil {
			t.Errorf("after unpause: %+v", s)
		}
		conn.Silent(true) // it stays attached, shutting down, until it answers
		if rec := api(h, "/slaves/bot-linux/shutdown"); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"state":"shutting down"`) {
			t.Errorf("shutdown: %d %s", rec.Code, rec.Body)
		}
		conn.Silent(false)
		synctest.Wait()
		if !conn.ShutdownRequested() {
			t.Error("the slave was not asked to shut down")
		}
	})
}

// TestPauseReasonForgotten: a reason is shown only while the slave is
// paused; unpaused by other means, it is forgotten.
func TestPauseReasonForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{}, &recorder{})
		h := guarded(t, f)
		api(h, "/slaves/bot-evil/pause?reason=flaky")
		if err := f.m.Unpause("bot-evil"); err != nil {
			t.Fatal(err)
		}
		if s := slaveJSON(t, h, "bot-evil"); s.Pause != nil {
			t.Errorf("unpaused slave still shows %+v", s.Pause)
		}
		if err := f.m.Pause("bot-evil"); err != nil {
			t.Fatal(err)
		}
		if s := slaveJSON(t, h, "bot-evil"); !s.Paused || s.Pause != nil {
			t.Errorf("paused by the manager: %+v, pause %+v (the old reason came back)", s, s.Pause)
		}
	})
}
