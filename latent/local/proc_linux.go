package local

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
)

// scanTagged returns the running processes, other than the master itself,
// whose environment carries EnvMasterID=masterID: it reads
// /proc/PID/environ, which only the processes' own user (or root) can
// read, and keeps nothing else of it than the slave's name.
func scanTagged(masterID string) ([]procInfo, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("local: scan /proc: %w", err)
	}
	self := os.Getpid()
	tag := []byte(EnvMasterID + "=" + masterID)
	namePrefix := []byte(EnvName + "=")
	var out []procInfo
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + ent.Name() + "/environ")
		if err != nil { // gone, or another user's
			continue
		}
		found, name := false, ""
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			switch {
			case bytes.Equal(kv, tag):
				found = true
			case bytes.HasPrefix(kv, namePrefix):
				name = string(kv[len(namePrefix):])
			}
		}
		if !found {
			continue
		}
		if st, ok := readStat(pid); ok && !st.dead() {
			out = append(out, procInfo{pid: pid, ppid: st.ppid, pgid: st.pgid, slave: name})
		}
	}
	return out, nil
}

// groupsAlive reports whether any process of the groups runs (zombies,
// which an init that does not reap may keep, do not count: they hold no
// files, so no lock).
func groupsAlive(groups []int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok && !st.dead() && slices.Contains(groups, st.pgid) {
			return true
		}
	}
	return false
}

// stat is what scanTagged needs of /proc/PID/stat.
type stat struct {
	state      byte
	ppid, pgid int
	threads    int
}

// dead reports whether the process has exited and closed its files: a
// zombie whose other threads have exited too (a multi-threaded process's
// leader shows Z while its other threads still exit, holding its files).
func (st stat) dead() bool { return st.state == 'Z' && st.threads <= 1 }

// readStat reads /proc/PID/stat: "pid (comm) state ppid pgrp ...", where
// comm may hold spaces and parentheses; num_threads is its 20th field.
func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, false
	}
	f := bytes.Fields(b[i+1:]) // from the 3rd field on
	if len(f) < 18 || len(f[0]) != 1 {
		return stat{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgid, err2 := strconv.Atoi(string(f[2]))
	threads, err3 := strconv.Atoi(string(f[17]))
	if err1 != nil || err2 != nil || err3 != nil {
		return stat{}, false
	}
	return stat{state: f[0][0], ppid: ppid, pgid: pgid, threads: threads}, true
}
