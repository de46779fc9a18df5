package commands

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func newTestOutput(t *testing.T, f *fakeMaster, s Settings) *output {
	t.Helper()
	o, err := newOutput(context.Background(), f, s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (f *fakeMaster) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.updates)
}

func TestOutputFlushesAfterBufferTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeMaster{}
		o := newTestOutput(t, f, Settings{BufferTimeout: 5 * time.Second})
		o.write("stdout", "", []byte("one\n"))
		time.Sleep(3 * time.Second)
		o.write("stdout", "", []byte("two\n"))
		time.Sleep(2*time.Second - time.Nanosecond)
		synctest.Wait()
		if n := f.calls(); n != 0 {
			t.Fatalf("sent %d updates before buffer_timeout", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := f.calls(); n != 1 {
			t.Fatalf("sent %d updates at buffer_timeout, want 1", n)
		}
		want := []any{"one\ntwo\n", []int64{3, 7}, []float64{946684800, 946684803}}
		got := f.updates[0][0]
		if got[0] != "stdout" || !reflect.DeepEqual(got[1], any(want)) {
			t.Errorf("got %v, want stdout %v", got, want)
		}
		// a new batch gets a new timer
		o.write("stderr", "", []byte("three\n"))
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := f.calls(); n != 2 {
			t.Fatalf("second batch: %d updates, want 2", n)
		}
		if err := o.close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOutputFlushesWhenFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeMaster{}
		o := newTestOutput(t, f, Settings{BufferSize: 100})
		line := strings.Repeat("x", 40) + "\n" // costs 41+16 = 57 bytes
		o.write("stdout", "", []byte(line))
		if n := f.calls(); n != 0 {
			t.Fatalf("sent %d updates too early", n)
		}
		o.write("stdout", "", []byte(line+line))
		if n := f.calls(); n != 2 {
			t.Fatalf("got %d updates, want one per line that overflowed", n)
		}
		o.send("rc", 0)
		if err := o.close(); err != nil {
			t.Fatal(err)
		}
		last := f.updates[len(f.updates)-1]
		if len(last) != 2 || last[1][0] != "rc" {
			t.Errorf("last update %v, want the third line and rc", last)
		}
	})
}

func TestOutputKeepsOrderAndFormats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeMaster{}
		o := newTestOutput(t, f, Settings{})
		o.header("hdr %d\n", 1)
		o.write("stdout", "", []byte("out"))
		o.write("log", "build.log", []byte("l1\nl2\n"))
		o.write("stderr", "", []byte("err\n"))
		o.write("log", "build.log", []byte("l3\n"))
		o.endStreams()
		if err := o.close(); err != nil {
			t.Fatal(err)
		}
		if len(f.updates) != 1 {
			t.Fatalf("got %d updates, want 1", len(f.updates))
		}
		var keys []string
		for _, kv := range f.updates[0] {
			keys = append(keys, kv[0].(string))
		}
		if strings.Join(keys, ",") != "header,log,stderr,log,stdout" {
			t.Errorf("keys %v", keys)
		}
		logv := f.updates[0][1][1].([]any)
		if logv[0] != "build.log" || logv[1].([]any)[0] != "l1\nl2\n" {
			t.Errorf("log value %v", logv)
		}
	})
}

func TestOutputReplacesInvalidUTF8(t *testing.T) {
	f := &fakeMaster{}
	o := newTestOutput(t, f, Settings{})
	o.write("stdout", "", []byte("a\xffb\n"))
	if err := o.close(); err != nil {
		t.Fatal(err)
	}
	if got := f.updates[0][0][1].([]any)[0]; got != "a\uFFFDb\n" {
		t.Errorf("got %q", got)
	}
}

func TestOutputReportsFailedSend(t *testing.T) {
	f := &fakeMaster{failOp: "update"}
	o := newTestOutput(t, f, Settings{})
	o.send("rc", 0)
	if err := o.close(); err == nil {
		t.Error("close did not report the failed update")
	}
}
