package client

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/buildslave/buildslave/client/commands"
)

// Version is the slave version reported to the master.
const Version = "buildslave-go 0.1"

// osReleaseFile is where os_* info comes from.
const osReleaseFile = "/etc/os-release"

// workerInfo is the answer to get_worker_info, as the stock slave builds
// it: every regular file of basedir/info (admin, host, access_uri, ...)
// by name, os_* from os-release, and facts about this slave. Of the
// environment only HOME is shared (the master expands "~" with it); the
// stock slave sends all of it, secrets included.
func workerInfo(basedir string) map[string]any {
	info := map[string]any{}
	dir := filepath.Join(basedir, "info")
	entries, _ := os.ReadDir(dir) // no info directory: nothing to add
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			info[e.Name()] = string(b)
		}
	}
	readOSRelease(osReleaseFile, info)
	cmds := map[string]any{}
	for _, n := range commands.Names() {
		cmds[n] = commands.Version
	}
	environ := map[string]any{}
	if home, ok := os.LookupEnv("HOME"); ok {
		environ["HOME"] = home
	}
	info["environ"] = environ
	info["system"] = system()
	info["basedir"] = basedir
	info["numcpus"] = runtime.NumCPU()
	info["version"] = Version
	info["worker_commands"] = cmds
	info["delete_leftover_dirs"] = false
	return info
}

// readOSRelease adds os_<key> for every KEY=value line of path with a
// value, quotes stripped.
func readOSRelease(path string, info map[string]any) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && v != "" {
			info["os_"+strings.ToLower(k)] = strings.Trim(v, `"`)
		}
	}
}

// system is Python's os.name on this platform, which the master reads to
// join the slave's paths: "nt" on Windows (with '\'), else "posix".
func system() string {
	if runtime.GOOS == "windows" {
		return "nt"
	}
	return "posix"
}
