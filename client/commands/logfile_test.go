package commands

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestLogWatcherPollsEveryTwoSeconds(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "build.log")
	synctest.Test(t, func(t *testing.T) {
		f := &fakeMaster{}
		out, err := newOutput(context.Background(), f, Settings{BufferTimeout: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		activity := make(chan struct{}, 1)
		w := newLogWatcher(logfile{name: "build", path: "build.log"}, dir, out, activity)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			w.watch(stop)
			close(done)
		}()
		if err := os.WriteFile(path, []byte("first\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(logPoll - time.Millisecond)
		synctest.Wait()
		if f.calls() != 0 {
			t.Fatal("read before the first poll")
		}
		time.Sleep(2 * time.Millisecond) // poll, then buffer_timeout
		synctest.Wait()
		if got := f.result(t).logs["build"]; got == nil || got.String() != "first\n" {
			t.Fatalf("after a poll: %v", got)
		}
		select {
		case <-activity:
		default:
			t.Error("logfile output was not reported as activity")
		}
		fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteString("second\n")
		fh.Close()
		close(stop) // the last poll reads what is left
		<-done
		out.close()
		if got := f.result(t).logs["build"].String(); !strings.HasSuffix(got, "second\n") {
			t.Errorf("after stop: %q", got)
		}
	})
}
