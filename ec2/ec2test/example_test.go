package ec2test_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/buildslave/buildslave/ec2/ec2test"
)

// The real SDK client launches and terminates an instance on the fake,
// whose clock the example moves on with Advance instead of waiting; the
// ledger then shows what would have been billed.
func Example() {
	fake := ec2test.NewServer(ec2test.Options{BootDelay: time.Minute})
	defer fake.Close()
	fake.AddImage(ec2test.Image{ID: "ami-12345", Location: "buildbot-ubuntu-10/image.manifest.xml"})

	sdk := ec2.New(ec2.Options{
		BaseEndpoint: aws.String(fake.URL),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("publickey", "privatekey", ""),
	})
	ctx := context.Background()
	out, err := sdk.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12345"), InstanceType: types.InstanceTypeM1Large,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		log.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	fmt.Println(id, out.Instances[0].State.Name)

	fake.Advance(time.Minute) // the boot delay
	fmt.Println(fake.Instances()[0].State)

	if _, err := sdk.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		log.Fatal(err)
	}
	for _, inst := range fake.Instances() {
		fmt.Println(inst.ID, inst.ImageID, inst.InstanceType, inst.State)
	}
	fmt.Println("signed with", fake.AccessKeyIDs())
	// Output:
	// i-00000000000000001 pending
	// running
	// i-00000000000000001 ami-12345 m1.large terminated
	// signed with [publickey]
}

// FailNext makes the next calls of an action fail as EC2 would, with the
// error code the SDK reports.
func ExampleServer_FailNext() {
	fake := ec2test.NewServer(ec2test.Options{})
	defer fake.Close()
	fake.FailNext("RunInstances", 1, "InsufficientInstanceCapacity")

	sdk := ec2.New(ec2.Options{
		BaseEndpoint: aws.String(fake.URL),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("publickey", "privatekey", ""),
		Retryer:      aws.NopRetryer{}, // see the failure, not the SDK's retries
	})
	_, err := sdk.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12345"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.ErrorCode())
	}
	fmt.Println(len(fake.Instances()), "instances launched")
	// Output:
	// InsufficientInstanceCapacity
	// 0 instances launched
}
