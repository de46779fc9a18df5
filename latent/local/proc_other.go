//go:build unix && !linux

package local

import "github.com/buildslave/buildslave/internal/procgroup"

// scanTagged finds no process outside Linux, which has no /proc environ
// to read: the PidFile in the basedir is what finds an instance there.
func scanTagged(string) ([]procInfo, error) { return nil, nil }

// groupsAlive reports whether any of the groups still has a process.
func groupsAlive(groups []int) bool {
	for _, g := range groups {
		if procgroup.Alive(g) {
			return true
		}
	}
	return false
}
