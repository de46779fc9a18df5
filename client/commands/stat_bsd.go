//go:build darwin || freebsd

package commands

import "syscall"

// statTimes returns st's access, modification and status change times.
func statTimes(st *syscall.Stat_t) (a, m, c syscall.Timespec) {
	return st.Atimespec, st.Mtimespec, st.Ctimespec
}
