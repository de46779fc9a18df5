package ec2_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

func TestAMISelectedThroughTheAPI(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	for _, img := range []ec2test.Image{
		{ID: "ami-00000001", Owner: "111111111111", Location: "bb/slave-9/image.manifest.xml"},
		{ID: "ami-00000002", Owner: "111111111111", Location: "bb/slave-10/image.manifest.xml"},
		{ID: "ami-00000003", Owner: "111111111111", Location: "bb/slave-11/image.manifest.xml", State: "pending"},
		{ID: "ami-00000004", Owner: "999999999999", Location: "bb/slave-12/image.manifest.xml"},
	} {
		fake.AddImage(img)
	}
	s, _ := newSlave(t, fake, "bot1", ec2.ValidAMIOwners(111111111111), ec2.ValidAMILocationRegex(`bb/slave-(\d+)/`))
	inst := start(t, s, "m1")
	defer stop(t, s, inst)
	if got := instance(t, fake, inst.ID).ImageID; got != "ami-00000002" {
		t.Errorf("image %s, want ami-00000002 (10 beats 9; 11 is pending; 12 has another owner)", got)
	}

	none, _ := newSlave(t, fake, "bot2", ec2.ValidAMIOwners(111111111111), ec2.ValidAMILocationRegex(`nothing`))
	if _, err := none.Start(context.Background(), latent.StartRequest{Name: "bot2", Password: "p", MasterID: "m1"}); err == nil || !strings.Contains(err.Error(), "no available image") {
		t.Errorf("Start with no image = %v", err)
	}
}

// TestKeyPairAndSecurityGroupMadeOnce: slaves sharing a Client make the
// key pair and the security group once.
func TestKeyPairAndSecurityGroupMadeOnce(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	client := newClient(t, fake, &testlog.Buffer{})
	const n = 5
	var wg sync.WaitGroup
	var all []*ec2.Slave
	var logs []*testlog.Buffer
	for i := range n {
		s, l := newSlaveOn(t, client, fmt.Sprintf("bot%d", i), ec2.AMI("ami-12345"))
		all, logs = append(all, s), append(logs, l)
	}
	insts := make([]latent.Instance, n)
	for i, s := range all {
		wg.Go(func() { insts[i] = start(t, s, "m1") })
	}
	wg.Wait()
	for i, s := range all {
		stop(t, s, insts[i])
	}
	if fake.Calls("CreateKeyPair") != 1 || fake.Calls("CreateSecurityGroup") != 1 {
		t.Errorf("CreateKeyPair %d, CreateSecurityGroup %d calls; want 1 each", fake.Calls("CreateKeyPair"), fake.Calls("CreateSecurityGroup"))
	}
	if !slices.Equal(fake.KeyPairs(), []string{"latent_buildbot_slave"}) || !slices.Equal(fake.SecurityGroups(), []string{"latent_buildbot_slave"}) {
		t.Errorf("key pairs %v, groups %v", fake.KeyPairs(), fake.SecurityGroups())
	}
	var text string
	for _, l := range logs {
		text += l.String()
	}
	if !strings.Contains(text, "created key pair") || !strings.Contains(text, "created security group") {
		t.Errorf("creation not logged: %s", text)
	}
	if strings.Contains(text, "PRIVATE KEY") {
		t.Errorf("key material logged")
	}

	existing := newFake(t, ec2test.Options{})
	existing.AddKeyPair("mine")
	existing.AddSecurityGroup("ours")
	s, _ := newSlave(t, existing, "bot1", ec2.AMI("ami-12345"), ec2.KeypairName("mine"), ec2.SecurityName("ours"))
	stop(t, s, start(t, s, "m1"))
	if existing.Calls("CreateKeyPair")+existing.Calls("CreateSecurityGroup") != 0 {
		t.Errorf("made what existed")
	}
}

func TestElasticIPAssociatedAndDisassociated(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	fake.AllocateAddress("208.77.188.166")
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.ElasticIP("208.77.188.166"))
	inst := start(t, s, "m1")
	if a, _ := fake.Address("208.77.188.166"); a.InstanceID != inst.ID || instance(t, fake, inst.ID).PublicIP != "208.77.188.166" {
		t.Errorf("after Start: address %+v", a)
	}
	stop(t, s, inst)
	if a, _ := fake.Address("208.77.188.166"); a.InstanceID != "" || a.AssociationID != "" {
		t.Errorf("after Stop: address %+v", a)
	}
	if fake.Calls("DisassociateAddress") != 1 {
		t.Errorf("DisassociateAddress called %d times, want 1 (before terminating)", fake.Calls("DisassociateAddress"))
	}

	// An address not allocated to the account fails the start, and leaves nothing running.
	bad, _ := newSlave(t, fake, "bot2", ec2.AMI("ami-12345"), ec2.ElasticIP("192.0.2.1"))
	if _, err := bad.Start(context.Background(), latent.StartRequest{Name: "bot2", Password: "p", MasterID: "m1"}); err == nil || !strings.Contains(err.Error(), "InvalidAddress.NotFound") {
		t.Errorf("Start = %v", err)
	}
}

func TestSpotWithFallback(t *testing.T) {
	for _, tc := range []struct {
		refusal  string
		wantSpot bool
	}{
		{"", true},
		{"InsufficientInstanceCapacity", false},
		{"SpotMaxPriceTooLow", false},
	} {
		t.Run(tc.refusal, func(t *testing.T) {
			fake := newFake(t, ec2test.Options{})
			fake.RefuseSpot(tc.refusal)
			s, logs := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.SpotInstance(0.25))
			inst := start(t, s, "m1")
			got := instance(t, fake, inst.ID)
			stop(t, s, inst)
			if got.Spot != tc.wantSpot || (got.Spot && got.SpotMaxPrice != "0.25") {
				t.Errorf("spot %v at %q, want spot %v at 0.25", got.Spot, got.SpotMaxPrice, tc.wantSpot)
			}
			if fell := strings.Contains(logs.String(), "on-demand"); fell == tc.wantSpot {
				t.Errorf("fallback logged %v: %s", fell, logs)
			}
			if n := len(fake.Instances()); n != 1 {
				t.Errorf("%d instances launched, want 1", n)
			}
		})
	}
}

func TestThrottlingAndServerErrorsRetriedAndCounted(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	fake.FailNext("RunInstances", 2, "RequestLimitExceeded")
	fake.FailNext("DescribeInstances", 1, "RequestLimitExceeded")
	fake.FailNext("TerminateInstances", 2, "InternalError")
	stop(t, s, start(t, s, "m1"))
	if got := s.RetryStats(); got.Throttled != 3 || got.ServerErrors != 2 {
		t.Errorf("RetryStats = %+v, want 3 throttled and 2 server errors", got)
	}
	if n := len(fake.Instances()); n != 1 {
		t.Errorf("%d instances launched, want 1: retries must not launch twice", n)
	}

	// Past the attempts, the error comes back, and nothing runs.
	fake.FailNext("RunInstances", 5, "RequestLimitExceeded")
	_, err := s.Start(context.Background(), latent.StartRequest{Name: "bot1", Password: "p", MasterID: "m1"})
	if err == nil || !strings.Contains(err.Error(), "RequestLimitExceeded") {
		t.Errorf("Start = %v, want RequestLimitExceeded", err)
	}
}

func TestStartFailuresLeaveNothingRunning(t *testing.T) {
	t.Run("unknown AMI", func(t *testing.T) {
		fake := newFake(t, ec2test.Options{})
		s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-00000bad"))
		_, err := s.Start(context.Background(), latent.StartRequest{Name: "bot1", Password: "p", MasterID: "m1"})
		if err == nil || !strings.Contains(err.Error(), "InvalidAMIID.NotFound") {
			t.Errorf("Start = %v", err)
		}
	})
	t.Run("capacity", func(t *testing.T) {
		fake := newFake(t, ec2test.Options{})
		s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.Retry(2, time.Millisecond))
		fake.FailNext("RunInstances", 2, "InsufficientInstanceCapacity")
		_, err := s.Start(context.Background(), latent.StartRequest{Name: "bot1", Password: "p", MasterID: "m1"})
		if err == nil || !strings.Contains(err.Error(), "InsufficientInstanceCapacity") {
			t.Errorf("Start = %v", err)
		}
	})
	t.Run("terminated while pending", func(t *testing.T) {
		fake := newFake(t, ec2test.Options{BootDelay: time.Hour})
		s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
		errc := make(chan error)
		go func() {
			_, err := s.Start(context.Background(), latent.StartRequest{Name: "bot1", Password: "p", MasterID: "m1"})
			errc <- err
		}()
		for len(fake.Instances()) == 0 {
			time.Sleep(time.Millisecond)
		}
		fake.TerminateOutside(fake.Instances()[0].ID)
		err := <-errc
		var g *ec2.GoneError
		if !errors.As(err, &g) || !strings.Contains(g.Reason, "User initiated") {
			t.Errorf("Start = %v, want a GoneError with the state reason", err)
		}
	})
	t.Run("not running within missing_timeout", func(t *testing.T) {
		fake := newFake(t, ec2test.Options{BootDelay: time.Hour})
		s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.SlaveOptions(slave.MissingTimeout(50*time.Millisecond)))
		_, err := s.Start(context.Background(), latent.StartRequest{Name: "bot1", Password: "p", MasterID: "m1"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Start = %v, want a deadline", err)
		}
		if got := fake.Instances()[0].State; got != "terminated" {
			t.Errorf("instance %s, want terminated", got)
		}
	})
	t.Run("caller gives up", func(t *testing.T) {
		fake := newFake(t, ec2test.Options{BootDelay: time.Hour})
		s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, err := s.Start(ctx, latent.StartRequest{Name: "bot1", Password: "p", MasterID: "m1"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Start = %v", err)
		}
	})
	t.Run("bad request", func(t *testing.T) {
		fake := newFake(t, ec2test.Options{})
		s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
		for _, req := range []latent.StartRequest{{Name: "bot1", Password: "p"}, {Name: "bot2", Password: "p", MasterID: "m"}} {
			if _, err := s.Start(context.Background(), req); err == nil {
				t.Errorf("Start(%+v) succeeded", req)
			}
		}
	})
}

func TestStopWaitsForTerminated(t *testing.T) {
	fake := newFake(t, ec2test.Options{TerminateDelay: 50 * time.Millisecond})
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	inst := start(t, s, "m1")
	stop(t, s, inst)
	if got := instance(t, fake, inst.ID).State; got != "terminated" {
		t.Errorf("after Stop: %s", got)
	}
	// Stopping again, and stopping an instance EC2 forgot, are not errors.
	stop(t, s, inst)
	fake.Advance(2 * ec2test.DefaultRetention)
	stop(t, s, inst)

	// Stop is bounded.
	slow := newFake(t, ec2test.Options{TerminateDelay: time.Hour})
	s2, _ := newSlave(t, slow, "bot2", ec2.AMI("ami-12345"), ec2.StopTimeout(30*time.Millisecond))
	inst2 := start(t, s2, "m1")
	if err := s2.Stop(context.Background(), inst2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want a deadline", err)
	}
	slow.Advance(time.Hour)
}

func TestCheckNoticesInstancesGone(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.SpotInstance(0.1))
	ctx := context.Background()
	a, b := start(t, s, "m1"), start(t, s, "m1")
	if err := s.Check(ctx, a); err != nil {
		t.Errorf("Check(running) = %v", err)
	}
	fake.TerminateOutside(a.ID)
	fake.ReclaimSpot(b.ID)
	for _, tc := range []struct {
		inst   latent.Instance
		reason string
	}{{a, "User initiated shutdown"}, {b, "Spot instance termination"}} {
		err := s.Check(ctx, tc.inst)
		var g *ec2.GoneError
		if !errors.As(err, &g) || g.InstanceID != tc.inst.ID || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("Check = %v, want a GoneError saying %q", err, tc.reason)
		}
	}
	fake.Advance(2 * ec2test.DefaultRetention)
	if err := s.Check(ctx, a); err == nil || !strings.Contains(err.Error(), "vanished") {
		t.Errorf("Check(forgotten) = %v, want vanished", err)
	}
}

func TestListSeesOnlyThisMaster(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	mine, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	theirs, _ := newSlave(t, fake, "bot2", ec2.AMI("ami-12345"))
	ctx := context.Background()
	a, b := start(t, mine, "m1"), start(t, mine, "m1")
	other := start(t, theirs, "m2")
	done := start(t, mine, "m1")
	stop(t, mine, done)

	list, err := theirs.List(ctx, "m1") // any slave of the driver lists the master's instances
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range list {
		ids = append(ids, in.ID)
		if in.MasterID != "m1" || in.Slave != "bot1" || in.Started.IsZero() {
			t.Errorf("listed %+v", in)
		}
	}
	if want := []string{a.ID, b.ID}; !slices.Equal(ids, want) {
		t.Errorf("List(m1) = %v, want %v (not m2's, not terminated ones)", ids, want)
	}
	// A reaper stops what List found; the other master's instance runs on.
	for _, in := range list {
		if err := mine.Stop(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if got := instance(t, fake, other.ID).State; got != "running" {
		t.Errorf("other master's instance is %s", got)
	}
	stop(t, theirs, other)
	if list, _ := mine.List(ctx, "m1"); len(list) != 0 {
		t.Errorf("after reaping: %v", list)
	}
}

func TestUserDataAndBootHook(t *testing.T) {
	boots := make(chan ec2test.Boot, 1)
	fake := newFake(t, ec2test.Options{BootDelay: 20 * time.Millisecond, OnRunning: func(b ec2test.Boot) { boots <- b }})
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"),
		ec2.MasterAddress("10.0.0.1:9989"),
		ec2.UserData("master={{.Master}} name={{.Name}} password={{.Password}} id={{.MasterID}}"))
	inst, err := s.Start(context.Background(), latent.StartRequest{Name: "bot1", Password: "pw-123", MasterID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, s, inst)
	b := <-boots
	if b.InstanceID != inst.ID || b.UserData != "master=10.0.0.1:9989 name=bot1 password=pw-123 id=m1" || b.Tags[ec2.SlaveTag] != "bot1" {
		t.Errorf("boot %+v", b)
	}
}

// TestPollerBatches starts slaves sharing a Client at once and counts
// DescribeInstances: the Client's poller describes them together.
func TestPollerBatches(t *testing.T) {
	const n, boot, interval = 40, 200 * time.Millisecond, 20 * time.Millisecond
	fake := newFake(t, ec2test.Options{BootDelay: boot})
	client := newClient(t, fake, &testlog.Buffer{}, ec2.PollInterval(interval))
	var slaves []*ec2.Slave
	for i := range n {
		s, _ := newSlaveOn(t, client, fmt.Sprintf("bot%d", i), ec2.AMI("ami-12345"))
		slaves = append(slaves, s)
	}
	insts := make([]latent.Instance, n)
	began := time.Now()
	var wg sync.WaitGroup
	for i, s := range slaves {
		wg.Go(func() { insts[i] = start(t, s, "m1") })
	}
	wg.Wait()
	elapsed := time.Since(began)
	describes := fake.Calls("DescribeInstances")
	if max := int(elapsed/interval) + 2; describes > max {
		t.Errorf("%d DescribeInstances in %v, want at most %d (one per interval)", describes, elapsed, max)
	}
	for i, s := range slaves {
		stop(t, s, insts[i])
	}
}

// TestLostLaunchAnswers: a RunInstances whose answer is lost is retried
// under the same client token, which launches nothing more; when the SDK
// gives up, the instance it may have started is found by that token and
// terminated.
func TestLostLaunchAnswers(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	fake.LoseResponses("RunInstances", 2)
	stop(t, s, start(t, s, "m1"))
	if n := len(fake.Instances()); n != 1 || fake.Calls("RunInstances") != 3 {
		t.Errorf("%d instances from %d RunInstances; want 1 from 3", n, fake.Calls("RunInstances"))
	}

	once, logs := newSlave(t, fake, "bot2", ec2.AMI("ami-12345"), ec2.Retry(1, time.Millisecond))
	fake.LoseResponses("RunInstances", 1)
	if _, err := once.Start(context.Background(), latent.StartRequest{Name: "bot2", Password: "p", MasterID: "m1"}); err == nil {
		t.Fatal("Start succeeded without an answer")
	}
	if got := fake.Instances()[1].State; got != "terminated" || !strings.Contains(logs.String(), "launch answer was lost") {
		t.Errorf("the unanswered launch's instance is %s; logs: %s", got, logs)
	}
}
