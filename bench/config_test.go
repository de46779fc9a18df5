package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/buildslave/buildslave/bench/internal/benchcfg"
	"github.com/buildslave/buildslave/internal/integration"
)

// TestOurConfig checks that the generated TOML files read back as written,
// use only names of the example master's format, and hold no password.
func TestOurConfig(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "slave.password")
	if err := os.WriteFile(pw, []byte("sekrit\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := benchcfg.Addrs{PB: "127.0.0.1:1", Msgpack: "127.0.0.1:2", HTTP: "127.0.0.1:3"}
	for name, c := range map[string]benchcfg.Config{
		"storm":      benchcfg.Storm(addrs, 3, pw, time.Minute),
		"throughput": benchcfg.Throughput(addrs, 2, pw),
	} {
		t.Run(name, func(t *testing.T) {
			b, err := c.TOML()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "sekrit") {
				t.Errorf("the TOML file holds the password:\n%s", b)
			}
			path := filepath.Join(dir, name+".toml")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := benchcfg.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Errorf("read back\n%+v\nwant\n%+v", got, c)
			}
			for _, s := range got.Slaves {
				if p, err := s.ReadPassword(); err != nil || p != "sekrit" {
					t.Errorf("slave %s: password %q, %v", s.Name, p, err)
				}
			}
			if m := got.Master; m.Listen != addrs.PB || m.ListenMsgpack != addrs.Msgpack || m.HTTP != addrs.HTTP {
				t.Errorf("[master] %+v: want listen (PB) %s, listen_msgpack %s, http %s", m, addrs.PB, addrs.Msgpack, addrs.HTTP)
			}
			// Only the names of the example master's format.
			var raw map[string]any
			if _, err := toml.Decode(string(b), &raw); err != nil {
				t.Fatal(err)
			}
			known := map[string][]string{
				"":           {"master", "slaves", "builders", "schedulers"},
				"master":     {"listen", "listen_msgpack", "http", "master_id"},
				"slaves":     {"name", "password", "password_file", "max_builds", "keepalive_interval"},
				"builders":   {"name", "slaves", "steps"},
				"steps":      {"name", "shell"},
				"schedulers": {"builder", "periodic", "at_start"},
			}
			var check func(table string, v any)
			check = func(table string, v any) {
				switch v := v.(type) {
				case map[string]any:
					for k, e := range v {
						if !slices.Contains(known[table], k) {
							t.Errorf("key %q in [%s] is not in the example master's format", k, table)
						}
						if _, ok := known[k]; ok {
							check(k, e)
						}
					}
				case []map[string]any:
					for _, e := range v {
						check(table, e)
					}
				}
			}
			check("", raw)
		})
	}
}

// TestStockConfig has stock Buildbot check the generated master.cfg files,
// for each mode and protocol.
func TestStockConfig(t *testing.T) {
	bin := integration.Require(t, "buildbot")
	for _, proto := range []string{benchcfg.PB, benchcfg.Msgpack} {
		for name, mode := range map[string]benchcfg.StockMode{"storm": benchcfg.StockStorm, "throughput": benchcfg.StockThroughput} {
			stockConfig(t, bin, proto, name, mode)
		}
	}
	if _, err := benchcfg.Stock(benchcfg.StockStorm, "http", 9989, 3, "/pw"); err == nil {
		t.Error(`benchcfg.Stock took protocol "http"`)
	}
}

func stockConfig(t *testing.T, bin, proto, name string, mode benchcfg.StockMode) {
	t.Run(proto+"/"+name, func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		pw := filepath.Join(dir, "slave.password")
		if err := os.WriteFile(pw, []byte("sekrit\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := benchcfg.Stock(mode, proto, 9989, 3, pw)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(cfg), "sekrit") {
			t.Errorf("master.cfg holds the password")
		}
		if err := os.WriteFile(filepath.Join(dir, "master.cfg"), cfg, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "checkconfig", dir)
		cmd.Env = minimalEnv(dir)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Config file is good") {
			t.Errorf("buildbot checkconfig: %v\n%s\n%s", err, out, cfg)
		}
	})
}
