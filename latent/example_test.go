package latent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/latent/latenttest"
	"github.com/buildslave/buildslave/slave"
)

// quiet drops log lines, so that examples print only their output.
var quiet = slog.New(slog.DiscardHandler)

// printT stands in for the *testing.T a test gives latenttest.NewCloud: it
// prints a broken promise and runs no cleanups.
type printT struct{}

func (printT) Helper()                        {}
func (printT) Errorf(format string, a ...any) { fmt.Printf(format+"\n", a...) }
func (printT) Cleanup(func())                 {}

// The application builds the manager with its static slaves, then hands
// the latent slaves to latent.New, which adds them to the manager; a build
// slot on the latent slave is asked for exactly as on a normal one.
func Example() {
	bot, _ := slave.New("bot1", "sekrit", slave.MissingTimeout(20*time.Minute))
	m, _ := slave.NewManager(slave.Config{Logger: quiet})
	defer m.Close()
	cloud := latenttest.NewCloud(printT{}, m) // an ec2 or libvirt driver in production
	bot1 := cloud.Slave(bot, 10*time.Minute, latenttest.Boot{Delay: 50 * time.Millisecond})

	lc, err := latent.New(m, latent.Config{MasterID: "master-1", Logger: quiet}, bot1)
	if err != nil {
		fmt.Println(err)
		return
	}
	b, err := m.Acquire(context.Background(), "bot1") // substantiates bot1
	if err != nil {
		fmt.Println(err)
		return
	}
	st, _ := m.State("bot1")
	fmt.Println("build on", b.Slave(), "attached:", st.Attached)
	b.Release()

	if err := lc.Shutdown(context.Background()); err != nil {
		fmt.Println(err)
	}
	fmt.Println("instances left:", len(cloud.Running()))
	// Output:
	// build on bot1 attached: true
	// instances left: 0
}

// A build waiting for a latent slave learns why its start failed, and the
// slave goes into quarantine before it is tried again.
func ExampleLifecycle_failedStart() {
	bot, _ := slave.New("bot1", "sekrit")
	m, _ := slave.NewManager(slave.Config{Logger: quiet}, bot)
	defer m.Close()
	cloud := latenttest.NewCloud(printT{}, m)
	noCapacity := errors.New("InsufficientInstanceCapacity")
	bot1 := cloud.Slave(bot, 0, latenttest.Boot{StartErr: noCapacity})
	lc, _ := latent.New(m, latent.Config{MasterID: "master-1", Logger: quiet}, bot1)
	defer lc.Close()

	_, err := m.Acquire(context.Background(), "bot1")
	fmt.Println(errors.Is(err, noCapacity))
	st, _ := lc.Status("bot1")
	fmt.Println(st.State, st.QuarantinedUntil.Sub(st.Since))
	// Output:
	// true
	// quarantined 10s
}

// Statuses gives a status page one line per latent slave.
func ExampleLifecycle_Statuses() {
	a, _ := slave.New("a", "pw")
	b, _ := slave.New("b", "pw")
	m, _ := slave.NewManager(slave.Config{Logger: quiet}, a, b)
	defer m.Close()
	cloud := latenttest.NewCloud(printT{}, m)
	lc, _ := latent.New(m, latent.Config{MasterID: "master-1", Logger: quiet},
		cloud.Slave(a, 0, latenttest.Boot{Hang: true}), cloud.Slave(b, 0, latenttest.Boot{}))
	defer lc.Close()

	lc.Want("a")
	for _, st := range lc.Statuses() {
		fmt.Println(st.Name, st.State)
	}
	// Output:
	// a substantiating
	// b stopped
}

// Reconfigure changes the latent slaves at runtime: here bot1 is removed
// (it has no instance, so it is forgotten at once, by the manager too)
// and bot2 added.
func ExampleLifecycle_Reconfigure() {
	m, _ := slave.NewManager(slave.Config{Logger: quiet})
	defer m.Close()
	cloud := latenttest.NewCloud(printT{}, m)
	bot1, _ := slave.New("bot1", "sekrit")
	bot2, _ := slave.New("bot2", "sekrit")
	lc, _ := latent.New(m, latent.Config{MasterID: "master-1", Logger: quiet}, cloud.Slave(bot1, 0, latenttest.Boot{}))
	defer lc.Close()

	if err := lc.Reconfigure(cloud.Slave(bot2, 0, latenttest.Boot{})); err != nil {
		fmt.Println(err)
	}
	for _, s := range m.Slaves() {
		fmt.Println(s.Name())
	}
	// Output:
	// bot2
}
