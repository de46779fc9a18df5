//go:build unix

package procgroup

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestStartLeadsAGroup(t *testing.T) {
	for _, setsid := range []bool{false, true} {
		cmd := exec.Command("sleep", "60")
		if setsid {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		}
		g, err := Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid || g.ID() != pid {
			t.Errorf("setsid=%v: pid %d, pgid %d (%v), ID %d", setsid, pid, pgid, err, g.ID())
		}
		if !Alive(g.ID()) {
			t.Errorf("setsid=%v: group %d not alive", setsid, g.ID())
		}
		if err := g.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("setsid=%v: status %v, want killed by SIGKILL", setsid, cmd.ProcessState)
		}
		if Alive(g.ID()) {
			t.Errorf("setsid=%v: group %d alive after its only process was reaped", setsid, g.ID())
		}
		if err := Signal(g.ID(), syscall.SIGTERM); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("setsid=%v: signalling an empty group: %v, want ESRCH", setsid, err)
		}
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	}
}

// TestKillReachesGrandchildren kills a shell that left a background child:
// the pipe both hold as stdout reaches EOF only when both have exited.
func TestKillReachesGrandchildren(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & echo started; wait")
	cmd.Stdout = w
	g, err := Start(cmd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(r)
	if line, err := br.ReadString('\n'); line != "started\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	if err := g.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := r.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("the background sleep still holds the pipe: read %q, %v", rest, err)
	}
}
