package ec2_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/remote"
	"github.com/buildslave/buildslave/slave"
)

// TestBuildOnAnEC2InstanceOverTheRealProtocol boots our Go slave in each
// "instance" the fake EC2 runs, configured only by the instance's rendered
// user data, as an AMI's init script would: the slave attaches to a master
// built on the library over the real protocol, a build runs a shell
// command there, and build_wait_timeout later the instance is terminated.
func TestBuildOnAnEC2InstanceOverTheRealProtocol(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	// The instances' init: run the Go slave as the user data says, until
	// the instance terminates.
	var boots sync.WaitGroup
	defer boots.Wait()
	var mu sync.Mutex
	halt := map[string]context.CancelFunc{}
	fake := newFake(t, ec2test.Options{
		BootDelay: 20 * time.Millisecond,
		OnRunning: func(b ec2test.Boot) {
			env := map[string]string{}
			for _, line := range strings.Split(b.UserData, "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					env[k] = v
				}
			}
			s, err := client.New(client.Config{Master: env["BUILDSLAVE_MASTER"], Protocol: client.Msgpack, Name: env["BUILDSLAVE_NAME"],
				Password: env["BUILDSLAVE_PASSWORD"], Basedir: t.TempDir(), Logger: quiet, MinBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Errorf("user data %q: %v", b.UserData, err)
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			mu.Lock()
			halt[b.InstanceID] = cancel
			mu.Unlock()
			boots.Go(func() { s.Run(ctx) })
		},
		OnTerminated: func(id string) {
			mu.Lock()
			defer mu.Unlock()
			if cancel := halt[id]; cancel != nil {
				cancel()
			}
		},
	})

	bot, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.Logger(quiet),
		ec2.MasterAddress(l.Addr().String()),
		ec2.UserData("BUILDSLAVE_MASTER={{.Master}}\nBUILDSLAVE_NAME={{.Name}}\nBUILDSLAVE_PASSWORD={{.Password}}\n"),
		ec2.BuildWaitTimeout(50*time.Millisecond))
	m, err := slave.NewManager(slave.Config{Logger: quiet}, bot.Slave())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	server := &protocol.Server{Handler: &protocol.Handler{Manager: m, Logger: quiet}}
	served := make(chan struct{})
	go func() { server.Serve(l); close(served) }()
	defer func() { server.Shutdown(context.Background()); <-served }()
	lc, err := latent.New(m, latent.Config{MasterID: "master-1", Logger: quiet, CheckInterval: 10 * time.Millisecond}, bot)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := m.Acquire(ctx, "bot1")
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := remote.Start(ctx, b.Conn(), remote.Request{Name: "shell", Args: map[string]any{
		"workdir": t.TempDir(), "command": "echo built on $0", "env": map[string]any{}}})
	if err != nil {
		t.Fatal(err)
	}
	var out string
	for u := range cmd.Updates() {
		if u.Key == "stdout" {
			out += u.Text
		}
	}
	if err := cmd.Wait(ctx); err != nil || !strings.HasPrefix(out, "built on") {
		t.Fatalf("build: %v, stdout %q", err, out)
	}
	b.Release()

	// build_wait_timeout later the instance is terminated.
	for {
		st, _ := lc.Status("bot1")
		if st.State == latent.Stopped {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("still %v after the build", st.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fake.AssertNoneRunning(t)
	if err := lc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
