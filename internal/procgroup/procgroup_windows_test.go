package procgroup

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// basicAccounting is JOBOBJECT_BASIC_ACCOUNTING_INFORMATION.
type basicAccounting struct {
	TotalUserTime, TotalKernelTime                       int64
	ThisPeriodTotalUserTime, ThisPeriodTotalKernelTime   int64
	TotalPageFaultCount, TotalProcesses, ActiveProcesses uint32
	TotalTerminatedProcesses                             uint32
}

// active is the number of processes running in g's job.
func active(t *testing.T, g *Group) uint32 {
	t.Helper()
	var info basicAccounting
	err := windows.QueryInformationJobObject(g.job, windows.JobObjectBasicAccountingInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return info.ActiveProcesses
}

// waitActive polls, with a deadline, until g's job runs want processes.
func waitActive(t *testing.T, g *Group, want uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for active(t, g) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the job runs %d processes, want %d", active(t, g), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKillEndsTheJob kills a cmd.exe that started a background ping: both,
// and the foreground ping, end.
func TestKillEndsTheJob(t *testing.T) {
	cmd := exec.Command(os.Getenv("COMSPEC"), "/c", "start /b ping -n 60 127.0.0.1 & ping -n 60 127.0.0.1")
	g, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitActive(t, g, 3)
	if err := g.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != terminatedExitCode {
		t.Errorf("exit code %d, want %d", code, terminatedExitCode)
	}
	waitActive(t, g, 0)
}
