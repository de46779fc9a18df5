package slavecmd

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestParseConfigFromEnvironment(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg, err := parse(nil, lookupIn(map[string]string{envMaster: "10.0.2.2:9989", envName: "vm1",
		envPassword: "pw", envBasedir: "/srv/slave", envTLS: "true", envMaxRefusals: "4"}), log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Master != "10.0.2.2:9989" || cfg.Name != "vm1" || cfg.Password != "pw" || cfg.Basedir != "/srv/slave" ||
		!cfg.TLS || cfg.MaxRefusals != 4 {
		t.Errorf("cfg %+v", cfg)
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected log: %s", logs.String())
	}
}

func TestParseConfigFlagsWinAndPasswordFlagWarns(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg, err := parse([]string{"-master", "127.0.0.1:1", "-name", "n", "-password", "flagpw", "-basedir", "b"},
		lookupIn(map[string]string{envMaster: "other:2", envPassword: "envpw"}), log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Master != "127.0.0.1:1" || cfg.Password != "flagpw" {
		t.Errorf("cfg %+v", cfg)
	}
	if !strings.Contains(logs.String(), "command line") || strings.Contains(logs.String(), "flagpw") {
		t.Errorf("log %q", logs.String())
	}
}

func TestParseConfigCA(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	bad := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parse([]string{"-ca", bad}, lookupIn(nil), log, io.Discard); err == nil {
		t.Error("a CA file without certificates was accepted")
	}
	if _, err := parse([]string{"extra"}, lookupIn(nil), log, io.Discard); err == nil {
		t.Error("a stray argument was accepted")
	}
}

// TestParseBuildbotNames: an image made for Buildbot's latent workers sets
// BUILDMASTER, BUILDMASTER_PORT, WORKERNAME and WORKERPASS; ours win.
func TestParseBuildbotNames(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	cfg, err := parse(nil, lookupIn(map[string]string{envBuildmaster: "master.example", envBuildmasterPort: "19989",
		envWorkerName: "w1", envWorkerPass: "wpw", envBasedir: "/b"}), log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Master != "master.example:19989" || cfg.Name != "w1" || cfg.Password != "wpw" {
		t.Errorf("cfg %+v", cfg)
	}
	cfg, err = parse(nil, lookupIn(map[string]string{envBuildmaster: "master.example", envWorkerName: "w1", envWorkerPass: "wpw",
		envMaster: "10.0.0.1:1", envName: "ours", envPassword: "ourpw", envBasedir: "/b"}), log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Master != "10.0.0.1:1" || cfg.Name != "ours" || cfg.Password != "ourpw" {
		t.Errorf("ours should win: %+v", cfg)
	}
	cfg, _ = parse(nil, lookupIn(map[string]string{envBuildmaster: "m", envBasedir: "/b"}), log, io.Discard)
	if cfg.Master != "m:9989" {
		t.Errorf("default port: %q", cfg.Master)
	}
}
