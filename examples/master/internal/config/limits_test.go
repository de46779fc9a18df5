package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/internal/web"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/protocol/budget"
)

func TestUploadSizes(t *testing.T) {
	c := mustParse(t, `
[master]
max_upload_size = "10MiB"
[[slaves]]
name = "a"
password = "p"
[[builders]]
name = "b"
slaves = ["a"]
  [[builders.steps]]
  upload = "small"
  max_upload_size = 4096
  [[builders.steps]]
  upload = "default"
  [[builders.steps]]
  upload = "decimal"
  max_upload_size = "2 MB"
`)
	if c.BuildLimits.MaxUploadSize != 10<<20 {
		t.Errorf("master max_upload_size = %d", c.BuildLimits.MaxUploadSize)
	}
	if s := c.Builders[0].Steps; s[0].MaxUploadSize != 4096 || s[1].MaxUploadSize != 0 || s[2].MaxUploadSize != 2_000_000 {
		t.Errorf("steps' max_upload_size: %d %d %d", s[0].MaxUploadSize, s[1].MaxUploadSize, s[2].MaxUploadSize)
	}
	if c := mustParse(t, ""); c.BuildLimits.MaxUploadSize != builds.DefaultMaxUploadSize || builds.DefaultMaxUploadSize != 1<<30 {
		t.Errorf("default max_upload_size = %d", c.BuildLimits.MaxUploadSize)
	}

	_, err := parse(t, `
[master]
max_upload_size = -1
[[slaves]]
name = "a"
password = "p"
[[builders]]
name = "b"
slaves = ["a"]
  [[builders.steps]]
  shell = "true"
  max_upload_size = "1GiB"
  [[builders.steps]]
  upload = "f"
  max_upload_size = "lots"
  [[builders.steps]]
  upload = "g"
  max_upload_size = "99999999999TiB"
`)
	for _, want := range []string{
		`:3: master: max_upload_size: must be positive, got -1`,
		`:12: builders[0].steps[0]: max_upload_size: only an upload step has a max_upload_size`,
		`:15: builders[0].steps[1]: max_upload_size: want a size such as 65536, "64KiB" or "1GiB", got "lots"`,
		`:18: builders[0].steps[2]: max_upload_size: "99999999999TiB" is too large`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestOutputLimits(t *testing.T) {
	c := mustParse(t, "[master]\nmax_step_output = \"1MiB\"\nmax_printed_output = 4096\n")
	if c.StepOutput != 1<<20 || c.BuildLimits.MaxPrintedOutput != 4096 {
		t.Errorf("max_step_output %d, max_printed_output %d", c.StepOutput, c.BuildLimits.MaxPrintedOutput)
	}
	c = mustParse(t, "")
	if c.StepOutput != builds.DefaultStepBytes || c.BuildLimits.MaxPrintedOutput != builds.DefaultMaxPrintedOutput {
		t.Errorf("defaults: max_step_output %d, max_printed_output %d", c.StepOutput, c.BuildLimits.MaxPrintedOutput)
	}
	if _, err := parse(t, "[master]\nmax_step_output = 0\n"); err == nil || !strings.Contains(err.Error(), ":2: master: max_step_output: must be positive") {
		t.Errorf("max_step_output = 0: %v", err)
	}
}

func TestWebAndQueueLimits(t *testing.T) {
	c := mustParse(t, "[master]\nmax_queued_builds = 5\nmax_reason_length = 100\npage_builds = 7\nhttp_max_body = \"8KiB\"\n")
	if c.BuildLimits.MaxQueuedBuilds != 5 || c.BuildLimits.MaxReasonLength != 100 || c.PageBuilds != 7 || c.Web.MaxBody != 8<<10 {
		t.Errorf("limits %+v, page_builds %d, web %+v", c.BuildLimits, c.PageBuilds, c.Web)
	}
	c = mustParse(t, "")
	if c.BuildLimits.MaxQueuedBuilds != builds.DefaultMaxQueuedBuilds || c.BuildLimits.MaxReasonLength != builds.DefaultMaxReasonLength ||
		c.PageBuilds != status.DefaultPageBuilds || c.Web.MaxBody != web.DefaultMaxBody {
		t.Errorf("defaults: limits %+v, page_builds %d, web %+v", c.BuildLimits, c.PageBuilds, c.Web)
	}
	_, err := parse(t, "[master]\nmax_queued_builds = -1\npage_builds = -2\nhttp_max_body = \"1 parsec\"\n")
	for _, want := range []string{`:2: master: max_queued_builds: must be positive, got -1`, `:3: master: page_builds: must be positive`, `:4: master: http_max_body: want a size`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestHTTPAuth(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("0123456789abcdef0123\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "users"), []byte("# who may force builds\nci:s3cret\n\nops:pa:ss\r\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "short"), []byte("abc\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "bad-users"), []byte("ci:s3cret\nnopassword\n"), 0o600)
	src := "[master]\nhttp = \"0.0.0.0:8010\"\nhttp_token_file = \"token\"\nhttp_basic_auth_file = \"users\"\n"
	c, err := Parse(filepath.Join(dir, "master.toml"), []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Web.Token != "0123456789abcdef0123" || c.Web.Users["ci"] != "s3cret" || c.Web.Users["ops"] != "pa:ss" || len(c.Web.Users) != 2 || c.HTTPAllowUnauthenticated {
		t.Errorf("web %+v, allow %v", c.Web, c.HTTPAllowUnauthenticated)
	}
	c, err = Parse(filepath.Join(dir, "master.toml"), []byte("[master]\nhttp_allow_unauthenticated = true\n"), env)
	if err != nil || !c.HTTPAllowUnauthenticated || c.Web.Authenticated() {
		t.Errorf("http_allow_unauthenticated: %+v %v", c, err)
	}
	_, err = Parse(filepath.Join(dir, "master.toml"), []byte("[master]\nhttp_token_file = \"short\"\nhttp_basic_auth_file = \"bad-users\"\n"), env)
	for _, want := range []string{`:2: master: http_token_file: short: want one token of at least 16 characters`, `:3: master: http_basic_auth_file: bad-users:2: want user:password`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := parse(t, "[master]\nhttp_token_file = \"/nonexistent\"\n"); err == nil || !strings.Contains(err.Error(), "http_token_file: open /nonexistent") {
		t.Errorf("missing token file: %v", err)
	}
}

func TestWebTimeoutsAndConnections(t *testing.T) {
	c := mustParse(t, "[master]\nhttp_max_connections = 10\nhttp_read_header_timeout = \"2s\"\nhttp_read_timeout = \"3s\"\nhttp_write_timeout = \"4s\"\nhttp_idle_timeout = \"5s\"\nhttp_auth_burst = 3\n")
	if w := c.Web; w.MaxConnections != 10 || w.ReadHeaderTimeout != 2*time.Second || w.ReadTimeout != 3*time.Second || w.WriteTimeout != 4*time.Second || w.IdleTimeout != 5*time.Second || w.Guesses.Burst != 3 {
		t.Errorf("web %+v", w)
	}
	if w := mustParse(t, "").Web; w.MaxConnections != web.DefaultMaxConnections || w.ReadHeaderTimeout != web.DefaultReadHeaderTimeout ||
		w.ReadTimeout != web.DefaultReadTimeout || w.WriteTimeout != web.DefaultWriteTimeout || w.IdleTimeout != web.DefaultIdleTimeout {
		t.Errorf("defaults: web %+v", w)
	}
	if _, err := parse(t, "[master]\nhttp_idle_timeout = \"0s\"\n"); err == nil || !strings.Contains(err.Error(), ":2: master: http_idle_timeout: must be positive") {
		t.Errorf("http_idle_timeout = 0s: %v", err)
	}
}

func TestMessageMemory(t *testing.T) {
	if c := mustParse(t, ""); c.MessageMemory != budget.DefaultSize {
		t.Errorf("default message_memory %d, want budget.DefaultSize", c.MessageMemory)
	}
	if c := mustParse(t, "[master]\nmessage_memory = \"64MiB\"\n"); c.MessageMemory != 64<<20 {
		t.Errorf("message_memory %d, want 64 MiB", c.MessageMemory)
	}
	if _, err := parse(t, "[master]\nmessage_memory = \"1MiB\"\n"); err == nil || !strings.Contains(err.Error(), ":2: master: message_memory: must be at least 4MiB") {
		t.Errorf("message_memory = 1MiB: %v", err)
	}
}
