package main

import (
	"bytes"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/internal/integration"
)

// TestBrowserWatchesALatentBuild loads the real master's page in headless
// Chromium: before the build, a latent slave that never attached; after a
// forced build, the slave attached (idle, with its address) and the build succeeded with its
// output; and a screenshot of it.
func TestBrowserWatchesALatentBuild(t *testing.T) {
	b := integration.NewBrowser(t)
	m, out := startMaster(t, testConfig(t, localLatent))
	page := "http://" + m.webAddr + "/"

	dom := b.DOM(page)
	if !strings.Contains(dom, "l1") || !strings.Contains(dom, "stopped") {
		t.Fatalf("the page before any build lacks the stopped latent slave l1:\n%s", dom)
	}

	if _, err := m.runner.Force("b", "forced by the browser test"); err != nil {
		t.Fatal(err)
	}
	lastBuild(t, m, builds.Success)
	dom = b.DOM(page)
	for _, want := range []string{"idle", "127.0.0.1:", "success", "work", "done", "forced by the browser test"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page after the build lacks %q", want)
		}
	}
	shot := b.Screenshot(page, 1280, 800)
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() != 1280 {
		t.Fatalf("screenshot: %v (%d bytes)", err, len(shot))
	}
	if err := m.shutdown(10*time.Second, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	assertProcessesGone(t, out.String())
}

// TestBrowserForceButton clicks the page's own "force build" button in
// Chromium, which queues a build; a page of another site that submits the
// same form is refused.
func TestBrowserForceButton(t *testing.T) {
	m, out := startMaster(t, testConfig(t, offlineBuilder))
	page := "http://" + m.webAddr + "/"
	tab := newChromiumTab(t, page)
	if got := tab.eval(`document.querySelectorAll("#builders form input[name=csrf_token]").length`); got != "1" {
		t.Fatalf("%s force forms with a token on the page", got)
	}
	tab.eval(`document.querySelector("#builders form button").click()`)
	eventually(t, 20*time.Second, "the build forced by the button", func() bool { return len(m.history.Recent(10)) == 1 })
	eventually(t, 20*time.Second, "back on the page", func() bool { return tab.loaded(page) })
	if b := m.history.Recent(1)[0]; b.Builder != "b" || !strings.HasPrefix(b.Reason, "forced from 127.0.0.1:") {
		t.Errorf("the button forced %+v", b)
	}

	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<form method="post" action="http://%s/force"><input type="hidden" name="builder" value="b"></form>
<script>document.forms[0].submit()</script>`, m.webAddr)
	}))
	defer evil.Close()
	tab.navigate(evil.URL)
	eventually(t, 20*time.Second, "the cross-site form refused", func() bool { return len(out.Matching("limit=cross_origin")) == 1 })
	if n := len(m.history.Recent(10)); n != 1 {
		t.Errorf("%d builds after the cross-site form, want 1", n)
	}
}
