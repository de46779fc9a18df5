package status_test

import (
	"bytes"
	"errors"
	"flag"
	"image/png"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/internal/integration"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

var update = flag.Bool("update", false, "rewrite testdata/screenshot.png from the browser test")

// windowW and windowH are the browser's window size for screenshots.
const windowW, windowH = 1280, 960

// wantRow checks that the row with the given id, in the DOM, holds every
// one of want.
func wantRow(t *testing.T, dom, id string, want ...string) {
	t.Helper()
	row := rowOf(t, dom, id)
	for _, w := range want {
		if !strings.Contains(row, w) {
			t.Errorf("row %s lacks %q:\n%s", id, w, row)
		}
	}
}

// TestBrowser loads the page in a real browser as a slave attaches and a
// build runs and succeeds, and takes a screenshot of the result.
func TestBrowser(t *testing.T) {
	b := integration.NewBrowser(t)
	f := newFixture(t, latenttest.Boot{StartErr: errors.New("InsufficientInstanceCapacity: no m5.large in eu-west-1a")}, &recorder{})
	srv := httptest.NewServer(f.st.Handler())
	defer srv.Close()
	url := srv.URL + "/"

	dom := b.DOM(url)
	wantRow(t, dom, "slave-bot-linux", ">never attached<")
	wantRow(t, dom, "slave-local1", ">stopped<")

	slavetest.Attach(t, f.m, "bot-linux", "pw-bot-linux", slave.Info{
		Admin: "Jane Admin <jane@example.org>", Host: "Debian 12 on a 4-core Xeon", OS: "Debian GNU/Linux 12", NumCPUs: 4, Version: "3.7.0",
	})
	slavetest.Attach(t, f.m, "bot-evil", "pw-bot-evil", hostile)
	f.lc.Want("local1")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if st, _ := f.lc.Status("local1"); st.State.String() == "quarantined" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("local1 is not quarantined after its failed start")
		}
	}
	dom = b.DOM(url)
	wantRow(t, dom, "slave-bot-linux", ">attached<", "0 / 2", "Jane Admin &lt;jane@example.org&gt;", "os=linux")
	wantRow(t, dom, "slave-local1", ">quarantined<", "InsufficientInstanceCapacity")
	wantRow(t, dom, "slave-bot-evil", `&lt;script&gt;alert("admin")&lt;/script&gt;`)
	if strings.Contains(dom, "<script") || strings.Contains(dom, "<img") {
		t.Errorf("the browser made markup of hostile info:\n%s", dom)
	}

	start := time.Now().UTC()
	f.builds.put(status.Build{
		ID: 6, Builder: "test", Slave: "bot-evil", Reason: "periodic", State: "failure",
		Queued: start.Add(-time.Minute), Started: start.Add(-time.Minute), Finished: start.Add(-40 * time.Second),
		Steps: []status.Step{
			{Name: "checkout", State: "success", Output: "HEAD is now at 1a2b3c4\n"},
			{Name: "go test", State: "failure", RC: 1, Output: "--- FAIL: TestFlaky (0.02s)\n    flaky_test.go:12: got 3, want 4\nFAIL\n"},
		},
	})
	build, err := f.m.Acquire(t.Context(), "bot-linux")
	if err != nil {
		t.Fatal(err)
	}
	running := status.Build{
		ID: 7, Builder: "hello", Slave: "bot-linux", Reason: "forced from the status page", State: "running",
		Queued: start, Started: start, Steps: []status.Step{{Name: "greet", State: "running"}},
	}
	f.builds.put(running)
	dom = b.DOM(url)
	wantRow(t, dom, "slave-bot-linux", "1 / 2")
	wantRow(t, dom, "build-7", ">running<", "greet</summary>")
	wantRow(t, dom, "build-6", ">failure<", "<details open=\"\">", "got 3, want 4")

	done := running
	done.State, done.Finished = "success", start.Add(3*time.Second)
	done.Steps = []status.Step{
		{Name: "greet", State: "success", Output: "hello from bot-linux\n"},
		{Name: "artifact", State: "success", Output: "uploaded out.txt (21 bytes)\n"},
	}
	f.builds.put(done)
	build.Release()
	dom = b.DOM(url)
	wantRow(t, dom, "slave-bot-linux", "0 / 2")
	wantRow(t, dom, "build-7", ">success<", "hello from bot-linux", "uploaded out.txt")

	shot := b.Screenshot(url, windowW, windowH)
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if size := img.Bounds().Size(); size.X != windowW || size.Y != windowH {
		t.Errorf("screenshot is %v, want %dx%d", size, windowW, windowH)
	}
	if *update {
		if err := os.WriteFile(filepath.Join("testdata", "screenshot.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
