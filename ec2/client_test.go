package ec2_test

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/internal/leakcheck"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// TestSlavesShareOnlyWhatTheApplicationShares: two slaves built alike
// without a Client share nothing (each its own poller, logging to its own
// Logger, and its own retry counts); two given one Client share it, and
// the slave's Close leaves the shared Client open.
func TestSlavesShareOnlyWhatTheApplicationShares(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	first, firstLogs := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	second, secondLogs := newSlave(t, fake, "bot2", ec2.AMI("ami-12345"))
	if first.Client() == second.Client() {
		t.Fatal("two slaves without WithClient share a Client")
	}
	fake.FailNext("DescribeInstances", 5, "InternalError") // past Retry(5, …): the poll fails once
	stop(t, second, start(t, second, "m1"))
	if !strings.Contains(secondLogs.String(), "describing instances failed") || strings.Contains(firstLogs.String(), "describing") {
		t.Errorf("the failed poll is logged by the first slave's logger\nfirst: %s\nsecond: %s", firstLogs, secondLogs)
	}
	if got := first.RetryStats(); got != (ec2.RetryStats{}) {
		t.Errorf("the first slave counts the second's retries: %+v", got)
	}

	clientLogs := &testlog.Buffer{}
	client := newClient(t, fake, clientLogs)
	a, aLogs := newSlaveOn(t, client, "bot3", ec2.AMI("ami-12345"))
	b, _ := newSlaveOn(t, client, "bot4", ec2.AMI("ami-12345"))
	if a.Client() != client || b.Client() != client {
		t.Fatal("WithClient not used")
	}
	fake.FailNext("DescribeInstances", 5, "InternalError")
	inst := start(t, b, "m1")
	if !strings.Contains(clientLogs.String(), "describing instances failed") || strings.Contains(aLogs.String(), "describing") {
		t.Errorf("the shared poller logs to the Client's Logger\nclient: %s\nslave: %s", clientLogs, aLogs)
	}
	if a.RetryStats() != client.RetryStats() || client.RetryStats().ServerErrors == 0 {
		t.Errorf("shared retry counts: slave %+v, client %+v", a.RetryStats(), client.RetryStats())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	stop(t, a, inst) // through the Client b's Close left open

	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Start(context.Background(), latent.StartRequest{Name: "bot3", Password: "p", MasterID: "m1"}); !errors.Is(err, ec2.ErrClosed) {
		t.Errorf("Start on a closed Client = %v", err)
	}
	if _, err := a.List(context.Background(), "m1"); !errors.Is(err, ec2.ErrClosed) {
		t.Errorf("List on a closed Client = %v", err)
	}
	if n := fake.Calls("RunInstances"); n != 2 {
		t.Errorf("%d RunInstances, want 2: none after Close", n)
	}
}

// TestClientOptionsBelongToTheClient: the connection options go to
// NewClient, a slave's own to New; each refuses the other's.
func TestClientOptionsBelongToTheClient(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	client := newClient(t, fake, &testlog.Buffer{})
	for _, tc := range []struct {
		name  string
		opts  []ec2.Option
		field string
	}{
		{"region", []ec2.Option{ec2.Region("eu-west-1")}, "region"},
		{"endpoint", []ec2.Option{ec2.Endpoint(fake.URL)}, "endpoint"},
		{"keys", []ec2.Option{ec2.Identifier("id"), ec2.SecretIdentifier("TOPSECRET")}, "secret_identifier"},
		{"aws_id file", []ec2.Option{ec2.AWSIDFilePath("/nonexistent")}, "aws_id_file_path"},
		{"poll interval", []ec2.Option{ec2.PollInterval(time.Second)}, "poll_interval"},
		{"retry", []ec2.Option{ec2.Retry(1, time.Second)}, "retry"},
	} {
		t.Run("New with WithClient and "+tc.name, func(t *testing.T) {
			_, err := ec2.New("bot1", "pw", "m1.large", append([]ec2.Option{ec2.AMI("ami-12345"), ec2.WithClient(client)}, tc.opts...)...)
			var ce *slave.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.field+": is the shared Client's setting") {
				t.Errorf("New = %v, want a *slave.ConfigError on %s", err, tc.field)
			}
			if err != nil && strings.Contains(err.Error(), "TOPSECRET") {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
	if _, err := ec2.New("bot1", "pw", "m1.large", ec2.AMI("ami-12345"), ec2.WithClient(nil)); err == nil || !strings.Contains(err.Error(), "client: WithClient(nil)") {
		t.Errorf("New with WithClient(nil) = %v", err)
	}
	_, err := ec2.NewClient(ec2.Endpoint(fake.URL), ec2.AMI("ami-12345"), ec2.UserData("x"), ec2.WithClient(client), ec2.PollInterval(0))
	var ce *ec2.ClientConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("NewClient = %v, want *ec2.ClientConfigError", err)
	}
	for _, want := range []string{"ec2 client: ami: is a slave's setting", "user_data:", "client: WithClient is for ec2.New", "poll_interval: must be positive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NewClient = %v, want it to say %q", err, want)
		}
	}
}

// waitForGoroutine waits, at most 10 s, until a goroutine runs a function
// whose name contains fn.
func waitForGoroutine(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) {
			return
		}
	}
	t.Fatalf("no goroutine runs %s", fn)
}

// TestLifecycleCloseLeavesNoGoroutine: closing the Lifecycle while a
// Check waits for the next poll (a minute away) ends the poller's
// goroutine at once, as it ends every driver call; closing the Client and
// the slave's own closes their idle connections, so that nothing of the
// slaves is left running.
func TestLifecycleCloseLeavesNoGoroutine(t *testing.T) {
	before := leakcheck.Take()
	fake := newFake(t, ec2test.Options{}) // instances run at once, and never attach
	quiet := slog.New(slog.DiscardHandler)
	client := newClient(t, fake, &testlog.Buffer{}, ec2.PollInterval(time.Minute))
	bot1, _ := newSlaveOn(t, client, "bot1", ec2.AMI("ami-12345"), ec2.Logger(quiet))
	m, err := slave.NewManager(slave.Config{Logger: quiet}, bot1.Slave())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lc, err := latent.New(m, latent.Config{MasterID: "master-1", Logger: quiet, CheckInterval: time.Millisecond, ReapInterval: -1}, bot1)
	if err != nil {
		t.Fatal(err)
	}
	go lc.Substantiate(context.Background(), "bot1") // fails with ErrClosed
	waitForGoroutine(t, "ec2.(*Slave).Check")        // the instance runs; a Check waits for the next poll
	closeErr := lc.Close()
	before.Verify(t, leakcheck.Matching("buildslave/ec2."), leakcheck.Within(time.Second))

	// The instance left running is named by Close; the test stops it.
	st := fake.Instances()
	if len(st) != 1 || !strings.Contains(errString(closeErr), st[0].ID) {
		t.Fatalf("Close = %v, want it to name the running instance %v", closeErr, st)
	}
	cleaner, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	stop(t, cleaner, latent.Instance{ID: st[0].ID, Slave: "bot1", MasterID: "master-1"})
	cleaner.Close()
	client.Close()
	before.Verify(t, leakcheck.Matching("buildslave/ec2.", "net/http.(*persistConn)"), leakcheck.Within(5*time.Second))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
