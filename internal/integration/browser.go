package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Browser runs headless Chromium for a test, one process per page load,
// with the flags that keep it off the network but for the page's own host.
type Browser struct {
	t   testing.TB
	bin string
	dir string // the profile and HOME of every run
}

// NewBrowser finds Chromium (Debian's package chromium), or skips or
// fails t as Require does.
func NewBrowser(t testing.TB) *Browser {
	t.Helper()
	return &Browser{t: t, bin: Require(t, "chromium"), dir: t.TempDir()}
}

// run runs Chromium on url with extra arguments and returns its stdout.
func (b *Browser) run(url string, args ...string) []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + filepath.Join(b.dir, "profile"),
	}, args...)
	cmd := exec.CommandContext(ctx, b.bin, append(args, url)...)
	cmd.Env = append(os.Environ(), "HOME="+b.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		b.t.Fatalf("chromium %v: %v\n%s", args, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// DOM loads url and returns the DOM as the browser built it.
func (b *Browser) DOM(url string) string {
	b.t.Helper()
	return string(b.run(url, "--dump-dom"))
}

// Screenshot loads url in a window of w×h pixels and returns its PNG.
func (b *Browser) Screenshot(url string, w, h int) []byte {
	b.t.Helper()
	file := filepath.Join(b.dir, "screenshot.png")
	b.run(url, "--screenshot="+file, fmt.Sprintf("--window-size=%d,%d", w, h))
	img, err := os.ReadFile(file)
	if err != nil {
		b.t.Fatal(err)
	}
	return img
}
