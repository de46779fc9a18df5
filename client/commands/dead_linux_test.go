package commands

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// assertDead fails unless the process whose pid is in pidFile ends within
// 5 s; it waits on a pidfd, which works for processes that are not our
// children.
func assertDead(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	const sysPidfdOpen = 434
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno == syscall.ESRCH {
		return
	}
	if errno != 0 {
		t.Fatalf("pidfd_open: %v", errno)
	}
	defer syscall.Close(int(fd))
	var set syscall.FdSet
	set.Bits[fd/64] |= 1 << (fd % 64)
	tv := syscall.Timeval{Sec: 5}
	if n, err := syscall.Select(int(fd)+1, &set, nil, nil, &tv); err != nil || n != 1 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("grandchild %d survived the kill (select: %d, %v)", pid, n, err)
	}
}
