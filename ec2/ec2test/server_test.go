package ec2test_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/buildslave/buildslave/ec2/ec2test"
)

// client is the real SDK client pointed at the fake, without retries so
// that every answer is seen.
func client(fake *ec2test.Server) *ec2.Client {
	return ec2.New(ec2.Options{
		BaseEndpoint: aws.String(fake.URL),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		Retryer:      aws.NopRetryer{},
	})
}

func run(t *testing.T, c *ec2.Client, in *ec2.RunInstancesInput) string {
	t.Helper()
	out, err := c.RunInstances(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func runInput() *ec2.RunInstancesInput {
	return &ec2.RunInstancesInput{ImageId: aws.String("ami-12345"), InstanceType: types.InstanceTypeM1Large, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
}

func newFake(t *testing.T, opts ec2test.Options) (*ec2test.Server, *ec2.Client) {
	fake := ec2test.NewServer(opts)
	t.Cleanup(fake.Close)
	fake.AddImage(ec2test.Image{ID: "ami-12345", Location: "bucket/image.manifest.xml"})
	return fake, client(fake)
}

func TestErrorsAsEC2SendsThem(t *testing.T) {
	fake, c := newFake(t, ec2test.Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		inject string
		status int
	}{
		{"RequestLimitExceeded", 503},
		{"InternalError", 500},
		{"InsufficientInstanceCapacity", 500},
		{"InvalidAMIID.NotFound", 400},
	} {
		fake.FailNext("RunInstances", 1, tc.inject)
		_, err := c.RunInstances(ctx, runInput())
		var ae smithy.APIError
		var re *awshttp.ResponseError
		if !errors.As(err, &ae) || ae.ErrorCode() != tc.inject || !errors.As(err, &re) || re.HTTPStatusCode() != tc.status || re.ServiceRequestID() == "" {
			t.Errorf("%s: err = %v, want code %s, status %d and a request id", tc.inject, err, tc.inject, tc.status)
		}
	}
	if !retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(func() error {
		fake.FailNext("DescribeInstances", 1, "RequestLimitExceeded")
		_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		return err
	}()).Bool() {
		t.Error("the SDK does not see RequestLimitExceeded as throttling")
	}
	for name, call := range map[string]func() error{
		"InvalidAMIID.NotFound": func() error {
			_, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-0000"), InstanceType: "m1.small", MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
			return err
		},
		"InvalidKeyPair.NotFound": func() error {
			_, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"nope"}})
			return err
		},
		"InvalidGroup.NotFound": func() error {
			_, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"nope"}})
			return err
		},
		"InvalidInstanceID.NotFound": func() error {
			_, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
			return err
		},
		"InvalidParameterValue": func() error {
			_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
			return err
		},
		"InvalidAction": func() error {
			_, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{"i-1"}})
			return err
		},
	} {
		var ae smithy.APIError
		if err := call(); !errors.As(err, &ae) || ae.ErrorCode() != name || ae.ErrorMessage() == "" {
			t.Errorf("err = %v, want %s with a message", err, name)
		}
	}
}

func TestRequestsMustBeSigned(t *testing.T) {
	fake, _ := newFake(t, ec2test.Options{})
	resp, err := http.Post(fake.URL, "application/x-www-form-urlencoded", strings.NewReader("Action=DescribeInstances&Version=2016-11-15"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned request: %s", resp.Status)
	}
}

func TestInstanceLifecycleAndLedger(t *testing.T) {
	fake, c := newFake(t, ec2test.Options{BootDelay: time.Minute, TerminateDelay: time.Minute})
	ctx := context.Background()
	in := runInput()
	in.UserData = aws.String(base64.StdEncoding.EncodeToString([]byte("hello")))
	in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}}
	in.ClientToken = aws.String("token-1")
	id := run(t, c, in)
	if again := run(t, c, in); again != id {
		t.Errorf("same client token launched %s and %s", id, again)
	}
	state := func() string {
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		i := out.Reservations[0].Instances[0]
		if aws.ToString(i.Tags[0].Key) != "k" || i.LaunchTime == nil || i.InstanceType != types.InstanceTypeM1Large {
			t.Errorf("instance %+v", i)
		}
		return string(i.State.Name)
	}
	if s := state(); s != "pending" {
		t.Errorf("at launch: %s", s)
	}
	fake.Advance(time.Minute)
	if s := state(); s != "running" {
		t.Errorf("after the boot delay: %s", s)
	}
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	if s := state(); s != "shutting-down" {
		t.Errorf("after terminate: %s", s)
	}
	fake.Advance(time.Minute)
	if s := state(); s != "terminated" {
		t.Errorf("after the terminate delay: %s", s)
	}
	fake.Advance(ec2test.DefaultRetention)
	if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}); err == nil {
		t.Error("a long-terminated instance is still described")
	}
	ledger := fake.Instances()
	if len(ledger) != 1 || !ledger[0].Vanished || ledger[0].UserData != "hello" || ledger[0].Tags["k"] != "v" {
		t.Errorf("ledger %+v", ledger)
	}
	if fake.Calls("RunInstances") != 2 || fake.Calls("DescribeInstances") != 5 {
		t.Errorf("calls: %d RunInstances, %d DescribeInstances", fake.Calls("RunInstances"), fake.Calls("DescribeInstances"))
	}
}

func TestDescribeInstancesPagesAndFilters(t *testing.T) {
	_, c := newFake(t, ec2test.Options{})
	for i := range 12 {
		in := runInput()
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("master"), Value: aws.String(fmt.Sprint(i % 2))}}}}
		run(t, c, in)
	}
	in := &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), Filters: []types.Filter{{Name: aws.String("tag:master"), Values: []string{"1"}}}}
	var n, pages int
	for p := ec2.NewDescribeInstancesPaginator(c, in); p.HasMorePages(); pages++ {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range out.Reservations {
			n += len(r.Instances)
		}
	}
	if n != 6 || pages != 2 {
		t.Errorf("%d instances in %d pages, want 6 in 2", n, pages)
	}
}

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failures []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func TestAssertNoneRunning(t *testing.T) {
	fake, c := newFake(t, ec2test.Options{})
	id := run(t, c, runInput())
	r := &recorder{TB: t}
	fake.AssertNoneRunning(r)
	if len(r.failures) != 1 || !strings.Contains(r.failures[0], id) {
		t.Errorf("AssertNoneRunning with %s running: %v", id, r.failures)
	}
	fake.TerminateOutside(id)
	r = &recorder{TB: t}
	fake.AssertNoneRunning(r)
	if len(r.failures) != 0 {
		t.Errorf("AssertNoneRunning after terminate: %v", r.failures)
	}
}

// The fake serves the real SDK client: a custom BaseEndpoint, static
// credentials and a region are all it needs.
func ExampleNewServer() {
	fake := ec2test.NewServer(ec2test.Options{})
	defer fake.Close()
	fake.AddImage(ec2test.Image{ID: "ami-12345", Location: "bucket/image.manifest.xml"})

	client := ec2.New(ec2.Options{
		BaseEndpoint: aws.String(fake.URL),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
	})
	out, err := client.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12345"), InstanceType: types.InstanceTypeM1Small,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(*out.Instances[0].InstanceId, out.Instances[0].State.Name)
	fmt.Println(fake.Calls("RunInstances"), "RunInstances;", len(fake.Instances()), "in the ledger")
	// Output:
	// i-00000000000000001 pending
	// 1 RunInstances; 1 in the ledger
}
