package ec2_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/internal/leakcheck"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// TestThroughTheLifecycle drives an ec2 slave with the latent Lifecycle:
// a build substantiates it, the instance boots with user data carrying
// the start's password and attaches with it, and Shutdown terminates it.
// Before that, the Lifecycle's reaper stops an instance a crashed master
// left behind, found with List.
func TestThroughTheLifecycle(t *testing.T) {
	before := leakcheck.Take()
	var attaches sync.WaitGroup
	defer attaches.Wait()
	var m *slave.Manager
	var mu sync.Mutex
	conns := map[string]*slavetest.Conn{} // by instance id
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fake := newFake(t, ec2test.Options{
		BootDelay: 20 * time.Millisecond,
		// The instance's init script: attach as user data says.
		OnRunning: func(b ec2test.Boot) {
			name, password, ok := strings.Cut(b.UserData, " ")
			if !ok {
				return // the leftover instance has no user data
			}
			attaches.Go(func() {
				conn := slavetest.NewConn(slave.Info{Admin: "ec2test", Host: b.InstanceID})
				mu.Lock()
				conns[b.InstanceID] = conn
				mu.Unlock()
				if err := m.Authenticate(name, password, conn.RemoteAddr()); err != nil {
					t.Errorf("attach with the user data's password: %v", err)
					return
				}
				if err := m.Attach(ctx, name, conn); err != nil {
					t.Errorf("attach: %v", err)
					conn.Close()
				}
			})
		},
		// The machine's end drops its slave's connection.
		OnTerminated: func(id string) {
			mu.Lock()
			defer mu.Unlock()
			if c := conns[id]; c != nil {
				c.Drop(nil)
			}
		},
	})

	quiet := slog.New(slog.DiscardHandler)
	// A crashed master's leftover: an instance tagged with this master's id.
	crashed, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	leftover := start(t, crashed, "master-1")

	bot1, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.UserData("{{.Name}} {{.Password}}"), ec2.Logger(quiet))

	var err error
	m, err = slave.NewManager(slave.Config{Logger: quiet}, bot1.Slave())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lc, err := latent.New(m, latent.Config{MasterID: "master-1", Logger: quiet, CheckInterval: 10 * time.Millisecond}, bot1)
	if err != nil {
		t.Fatal(err)
	}
	if got := instance(t, fake, leftover.ID).State; got != "terminated" {
		t.Errorf("the leftover is %s, want reaped", got)
	}

	acquireCtx, cancelAcquire := context.WithTimeout(ctx, 10*time.Second)
	defer cancelAcquire()
	b, err := m.Acquire(acquireCtx, "bot1")
	if err != nil {
		t.Fatal(err)
	}
	if b.Slave() != "bot1" {
		t.Errorf("build on %s", b.Slave())
	}
	b.Release()
	// The slave may attach while Start still waits for the poll's answer:
	// Shutdown then stops the instance once Start returns.
	if err := lc.Shutdown(acquireCtx); err != nil {
		t.Fatal(err)
	}
	// Shutdown ended every driver call, and with them the poller.
	before.Verify(t, leakcheck.Matching("buildslave/ec2."), leakcheck.Within(time.Second))
	if n := len(fake.Instances()); n != 2 {
		t.Errorf("%d instances launched, want the leftover and one", n)
	}
	// newFake's cleanup asserts that none is left running.
}
