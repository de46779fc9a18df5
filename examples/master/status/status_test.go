package status_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// twoBuilds records a finished build whose output is hostile and a running
// one, queued from 90 s ago on.
func twoBuilds(f *fixture) {
	t0 := time.Now().UTC().Round(0).Add(-90 * time.Second)
	f.builds.put(status.Build{
		ID: 1, Builder: "hello", Slave: "bot-linux", Reason: "forced by the web page", State: "success",
		Queued: t0, Started: t0.Add(time.Second), Finished: t0.Add(90 * time.Second),
		Steps: []status.Step{
			{Name: "greet", State: "success", Output: "hello from <b>bot-linux</b>\n"},
			{Name: "artifact", State: "success", Output: "uploaded out.txt (12 bytes)\n"},
		},
	})
	f.builds.put(status.Build{
		ID: 2, Builder: "hello", Slave: "bot-evil", Reason: "periodic", State: "running",
		Queued: t0.Add(time.Minute), Started: t0.Add(time.Minute),
		Steps: []status.Step{{Name: "greet", State: "running"}},
	})
}

// get serves a GET of path and returns the response.
func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	return rec
}

// rowOf returns the HTML table row with the given id.
func rowOf(t *testing.T, page, id string) string {
	t.Helper()
	row := regexp.MustCompile(`(?s)<tr id="` + regexp.QuoteMeta(id) + `">.*?</tr>`).FindString(page)
	if row == "" {
		t.Fatalf("no row %q in\n%s", id, page)
	}
	return row
}

func TestPage(t *testing.T) { synctest.Test(t, testPage) }

func testPage(t *testing.T) {
	f := newFixture(t, latenttest.Boot{Hang: true}, &recorder{})
	slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{Admin: "Jane Admin <jane@example.org>", Host: "Debian 12 on a Xeon"})
	slavetest.Attach(t, f.m, "bot-evil", "pw-bot-evil", hostile)
	f.lc.Want("local1")
	twoBuilds(f)
	synctest.Wait()

	rec := get(t, f.st.Handler(), "/")
	if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	// No other site may frame the page to trick a click on its buttons.
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q lacks frame-ancestors 'none'", csp)
	}
	if xfo := rec.Header().Get("X-Frame-Options"); xfo != "DENY" {
		t.Errorf("X-Frame-Options %q, want DENY", xfo)
	}
	page := rec.Body.String()

	linux := rowOf(t, page, "slave-bot-linux")
	for _, want := range []string{">attached<", "0 / 2", "arch=amd64", "os=linux", "slavename=bot-linux",
		"Jane Admin &lt;jane@example.org&gt;", "Debian 12 on a Xeon", "127.0.0.1:"} {
		if !strings.Contains(linux, want) {
			t.Errorf("bot-linux row lacks %q:\n%s", want, linux)
		}
	}
	if solaris := rowOf(t, page, "slave-bot-solaris"); !strings.Contains(solaris, ">never attached<") {
		t.Errorf("bot-solaris row:\n%s", solaris)
	}
	local := rowOf(t, page, "slave-local1")
	if st, _ := f.lc.Status("local1"); !strings.Contains(local, ">substantiating<") || !strings.Contains(local, st.Instance.ID) {
		t.Errorf("local1 row, want substantiating instance %q:\n%s", st.Instance.ID, local)
	}

	evil := rowOf(t, page, "slave-bot-evil")
	for _, want := range []string{"&lt;script&gt;alert(&#34;admin&#34;)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;", "&#34;&gt;&lt;b&gt;os&lt;/b&gt;"} {
		if !strings.Contains(evil, want) {
			t.Errorf("bot-evil row lacks the escaped %q:\n%s", want, evil)
		}
	}
	for _, bad := range []string{"<script>alert", "<img src=x", "<b>os</b>", "<b>bot-linux</b>"} {
		if strings.Contains(page, bad) {
			t.Errorf("page holds unescaped %q", bad)
		}
	}

	if want := `<form method="post" action="/force"><input type="hidden" name="builder" value="hello"><input type="hidden" name="csrf_token" value="page-token"><button type="submit">force build</button></form>`; !strings.Contains(page, want) {
		t.Errorf("page lacks the force form %s", want)
	}
	if want := `value="&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"`; !strings.Contains(page, want) {
		t.Errorf("page lacks the escaped builder %s", want)
	}

	done := rowOf(t, page, "build-1")
	for _, want := range []string{">success<", "forced by the web page", "1m29s", "<details>", "hello from &lt;b&gt;bot-linux&lt;/b&gt;", "uploaded out.txt"} {
		if !strings.Contains(done, want) {
			t.Errorf("build 1 row lacks %q:\n%s", want, done)
		}
	}
	if running := rowOf(t, page, "build-2"); !strings.Contains(running, ">running<") {
		t.Errorf("build 2 row:\n%s", running)
	}
	if strings.Index(page, `id="build-2"`) > strings.Index(page, `id="build-1"`) {
		t.Error("builds are not listed newest first")
	}
}

func TestJSON(t *testing.T) { synctest.Test(t, testJSON) }

func testJSON(t *testing.T) {
	f := newFixture(t, latenttest.Boot{Hang: true}, &recorder{})
	slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{Admin: "jane"})
	slavetest.Attach(t, f.m, "bot-evil", "pw-bot-evil", hostile)
	if err := f.m.Pause("bot-linux"); err != nil {
		t.Fatal(err)
	}
	f.lc.Want("local1")
	twoBuilds(f)
	synctest.Wait()

	rec := get(t, f.st.Handler(), "/api/status")
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got status.Snapshot
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}

	states := map[string]string{}
	var names []string
	for _, s := range got.Slaves {
		names = append(names, s.Name)
		states[s.Name] = s.State
	}
	if want := []string{"bot-evil", "bot-linux", "bot-solaris", "local1"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("slaves %v, want %v", names, want)
	}
	if want := map[string]string{"bot-evil": "attached", "bot-linux": "paused", "bot-solaris": "never attached", "local1": "substantiating"}; !reflect.DeepEqual(states, want) {
		t.Errorf("states %v, want %v", states, want)
	}
	evil := got.Slaves[0]
	wantInfo := status.Info{Admin: hostile.Admin, Host: hostile.Host, OS: hostile.OS, NumCPUs: hostile.NumCPUs, Version: hostile.Version}
	if !reflect.DeepEqual(evil.Info, wantInfo) || evil.Latent != nil || evil.RemoteAddr == "" {
		t.Errorf("bot-evil %+v", evil)
	}
	linux := got.Slaves[1]
	if linux.MaxBuilds != 2 || linux.Properties["os"] != "linux" || linux.Properties["slavename"] != "bot-linux" {
		t.Errorf("bot-linux %+v", linux)
	}
	st, _ := f.lc.Status("local1")
	if l := got.Slaves[3].Latent; l == nil || l.State != "substantiating" || l.Instance != st.Instance.ID || !l.Since.Equal(st.Since) {
		t.Errorf("local1's latent %+v, want %+v", l, st)
	}
	if want := f.builds.Recent(status.DefaultPageBuilds); !reflect.DeepEqual(got.Builds, want) {
		t.Errorf("builds\n%+v\nwant\n%+v", got.Builds, want)
	}
	if want := []string{"hello", `"><script>alert(2)</script>`}; !reflect.DeepEqual(got.Builders, want) {
		t.Errorf("builders %q", got.Builders)
	}
}

// TestStates walks a slave through the states the page derives from the
// manager's State.
func TestStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, latenttest.Boot{}, &recorder{})
		want := func(state string) {
			t.Helper()
			synctest.Wait()
			for _, s := range f.st.Snapshot().Slaves {
				if s.Name == "bot-solaris" && s.State != state {
					t.Fatalf("bot-solaris is %q, want %q", s.State, state)
				}
			}
		}
		want("never attached")
		slavetest.Attach(t, f.m, "bot-solaris", "pw-bot-solaris", slave.Info{})
		want("attached")
		b, err := f.m.Acquire(t.Context(), "bot-solaris")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.m.GracefulShutdown("bot-solaris"); err != nil {
			t.Fatal(err)
		}
		want("shutting down")
		b.Release() // the slave shuts down: slavetest drops the connection
		want("detached")
		time.Sleep(time.Hour)
		want("missing")
	})
}

func TestRoutes(t *testing.T) {
	f := newFixture(t, latenttest.Boot{}, &recorder{})
	h := f.st.Handler()
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodHead, "/api/status", http.StatusOK},
		{http.MethodGet, "/metrics", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), tc.method, tc.path, nil))
		if rec.Code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.code)
		}
	}
}

// The page, the JSON and the gauge of running instances show the
// Lifecycle that Config.Lifecycle returns at each call: none while it
// returns nil, and one that appears later (as a reload creates it) from
// the next page on.
func TestLifecycleFollowed(t *testing.T) {
	f := newFixture(t, latenttest.Boot{}, &recorder{})
	lc := f.lc
	f.lc = nil
	if s := slaveJSON(t, f.st.Handler(), "local1"); s.Latent != nil {
		t.Errorf("local1 with no Lifecycle: latent %+v", s.Latent)
	}
	wantSeries(t, f, "buildslave_latent_instances_running")
	f.lc = lc
	if s := slaveJSON(t, f.st.Handler(), "local1"); s.Latent == nil || s.State != "stopped" {
		t.Errorf("local1 once the Lifecycle exists: state %q, latent %+v", s.State, s.Latent)
	}
	if !strings.Contains(rowOf(t, get(t, f.st.Handler(), "/").Body.String(), "slave-local1"), "stopped") {
		t.Error("the page's row of local1 does not say stopped")
	}
	wantSeries(t, f, "buildslave_latent_instances_running", `buildslave_latent_instances_running{kind="ec2"} 0`)
}
