package main

import (
	"bytes"
	"image/png"
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
