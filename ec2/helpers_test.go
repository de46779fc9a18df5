package ec2_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/latent"
)

// newFake starts a fake endpoint with the image ami-12345, closed at the
// end of the test, which also checks that no instance is left running.
func newFake(t testing.TB, opts ec2test.Options) *ec2test.Server {
	t.Helper()
	fake := ec2test.NewServer(opts)
	t.Cleanup(func() {
		fake.AssertNoneRunning(t)
		fake.Close()
	})
	fake.AddImage(ec2test.Image{ID: "ami-12345", Location: "bucket/image.manifest.xml"})
	return fake
}

// testOptions point a slave at the fake with test keys, a fast poll and
// fast retries, and log to logs.
func testOptions(fake *ec2test.Server, logs *testlog.Buffer) []ec2.Option {
	return []ec2.Option{
		ec2.Identifier("AKIDTEST"), ec2.SecretIdentifier("test-secret"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(5 * time.Millisecond),
		ec2.Retry(5, time.Millisecond),
		ec2.Logger(slog.New(slog.NewTextHandler(logs, nil))),
	}
}

// newSlave builds slave name against the fake; opts come after the test
// options, so they can override them.
func newSlave(t testing.TB, fake *ec2test.Server, name string, opts ...ec2.Option) (*ec2.Slave, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	s, err := ec2.New(name, "sekrit", "m1.large", append(testOptions(fake, logs), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// newClient makes a Client on the fake as testOptions configure it, then
// opts, closed at the end of the test.
func newClient(t testing.TB, fake *ec2test.Server, logs *testlog.Buffer, opts ...ec2.Option) *ec2.Client {
	t.Helper()
	c, err := ec2.NewClient(append(testOptions(fake, logs), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newSlaveOn builds slave name on the shared Client c.
func newSlaveOn(t testing.TB, c *ec2.Client, name string, opts ...ec2.Option) (*ec2.Slave, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	s, err := ec2.New(name, "sekrit", "m1.large", append([]ec2.Option{ec2.WithClient(c), ec2.Logger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}

func start(t testing.TB, s *ec2.Slave, master string) latent.Instance {
	t.Helper()
	inst, err := s.Start(context.Background(), latent.StartRequest{Name: s.Slave().Name(), Password: "fresh", MasterID: master})
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func stop(t testing.TB, s *ec2.Slave, inst latent.Instance) {
	t.Helper()
	if err := s.Stop(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
}

// instance returns the fake's record of id.
func instance(t testing.TB, fake *ec2test.Server, id string) ec2test.Instance {
	t.Helper()
	for _, in := range fake.Instances() {
		if in.ID == id {
			return in
		}
	}
	t.Fatalf("no instance %s", id)
	return ec2test.Instance{}
}
