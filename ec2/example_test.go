package ec2_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// fakeEC2 starts the fake endpoint the examples talk to instead of AWS,
// with the images the examples of Buildbot 0.8.6's manual choose among.
func fakeEC2() *ec2test.Server {
	fake := ec2test.NewServer(ec2test.Options{})
	for _, img := range []ec2test.Image{
		{ID: "ami-12345", Owner: "11111111111", Location: "buildbot-ubuntu-9/image.manifest.xml"},
		{ID: "ami-23456", Owner: "22222222222", Location: "buildbot-ubuntu-10/image.manifest.xml"},
		{ID: "ami-34567", Owner: "33333333333", Location: "other-debian-5/image.manifest.xml"},
	} {
		fake.AddImage(img)
	}
	return fake
}

// startStop starts an instance of the slave, says what ran, and stops it.
func startStop(bot *ec2.Slave, fake *ec2test.Server) {
	ctx := context.Background()
	inst, err := bot.Start(ctx, latent.StartRequest{Name: bot.Slave().Name(), Password: "fresh-password", MasterID: "master-1"})
	if err != nil {
		log.Fatal(err)
	}
	ran := fake.Instances()[0]
	fmt.Println(inst.ID, ran.ImageID, ran.InstanceType, ran.State)
	if err := bot.Stop(ctx, inst); err != nil {
		log.Fatal(err)
	}
	fmt.Println(inst.ID, fake.Instances()[0].State)
}

// The simplest EC2LatentBuildSlave of Buildbot 0.8.6's manual: name, password, instance type,
// the AMI, and the AWS keys.
//
//	EC2LatentBuildSlave('bot1', 'sekrit', 'm1.large',
//	    ami='ami-12345',
//	    identifier='publickey', secret_identifier='privatekey')
func Example() {
	fake := fakeEC2()
	defer fake.Close()

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.Identifier("publickey"), ec2.SecretIdentifier("privatekey"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond)) // the fake, not AWS
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close() // its own Client
	fmt.Println(bot1)
	startStop(bot1, fake)
	// Output:
	// ec2 slave bot1 (m1.large in us-east-1)
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
}

// With no keys given, they come from ~/.ec2/aws_id of the user running
// the master: the access key id on the first line, the secret access key
// on the second.
//
//	EC2LatentBuildSlave('bot1', 'sekrit', 'm1.large', ami='ami-12345')
func ExampleNew_awsIDFile() {
	fake := fakeEC2()
	defer fake.Close()

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake)
	fmt.Println("signed with", fake.AccessKeyIDs())
	// Output:
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
	// signed with [publickey]
}

// The AMI can be the one that sorts last by location among the images of
// some accounts: "buildbot-ubuntu-9/…" (ami-12345) sorts after
// "buildbot-ubuntu-10/…" (ami-23456) as a string.
//
//	bot1 = EC2LatentBuildSlave('bot1', 'sekrit', 'm1.large',
//	    valid_ami_owners=[11111111111, 22222222222],
//	    identifier='publickey', secret_identifier='privatekey')
func ExampleValidAMIOwners() {
	fake := fakeEC2()
	defer fake.Close()

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.ValidAMIOwners(11111111111, 22222222222),
		ec2.Identifier("publickey"), ec2.SecretIdentifier("privatekey"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake)
	// Output:
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
}

// Or among the images whose location matches a regular expression, of
// any owner.
//
//	bot1 = EC2LatentBuildSlave(
//	    'bot1', 'sekrit', 'm1.large',
//	    valid_ami_location_regex=r'buildbot\-.*/image.manifest.xml',
//	    identifier='publickey', secret_identifier='privatekey')
func ExampleValidAMILocationRegex() {
	fake := fakeEC2()
	defer fake.Close()

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.ValidAMILocationRegex(`buildbot\-.*/image.manifest.xml`),
		ec2.Identifier("publickey"), ec2.SecretIdentifier("privatekey"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake)
	// Output:
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
}

// A group in the expression is preferred for sorting; only the first
// group counts.
//
//	bot1 = EC2LatentBuildSlave(
//	    'bot1', 'sekrit', 'm1.large',
//	    valid_ami_location_regex=r'buildbot\-.*\-(.*)/image.manifest.xml',
//	    identifier='publickey', secret_identifier='privatekey')
func ExampleValidAMILocationRegex_group() {
	fake := fakeEC2()
	defer fake.Close()
	fake.AddImage(ec2test.Image{ID: "ami-45678", Location: "buildbot-aaa-xenial/image.manifest.xml"})
	fake.AddImage(ec2test.Image{ID: "ami-56789", Location: "buildbot-zzz-bionic/image.manifest.xml"})

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.ValidAMILocationRegex(`buildbot\-.*\-(.*)/image.manifest.xml`),
		ec2.Identifier("publickey"), ec2.SecretIdentifier("privatekey"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake) // "xenial" sorts last
	// Output:
	// i-00000000000000001 ami-45678 m1.large running
	// i-00000000000000001 terminated
}

// If every group is an integer, the sort is numeric: 10 after 9.
//
//	bot1 = EC2LatentBuildSlave(
//	    'bot1', 'sekrit', 'm1.large',
//	    valid_ami_location_regex=r'buildbot\-.*\-(\d+)/image.manifest.xml',
//	    identifier='publickey', secret_identifier='privatekey')
func ExampleValidAMILocationRegex_integer() {
	fake := fakeEC2()
	defer fake.Close()

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.ValidAMILocationRegex(`buildbot\-.*\-(\d+)/image.manifest.xml`),
		ec2.Identifier("publickey"), ec2.SecretIdentifier("privatekey"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake)
	// Output:
	// i-00000000000000001 ami-23456 m1.large running
	// i-00000000000000001 terminated
}

// An elastic IP is associated with each instance once it runs, so a
// firewall can admit only that address, and disassociated before the
// instance is terminated.
//
//	c['slaves'] = [EC2LatentBuildSlave('bot1', 'sekrit', 'm1.large',
//	    'ami-12345',
//	    elastic_ip='208.77.188.166')]
func ExampleElasticIP() {
	fake := fakeEC2()
	defer fake.Close()
	fake.AllocateAddress("208.77.188.166")

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.ElasticIP("208.77.188.166"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	ctx := context.Background()
	inst, err := bot1.Start(ctx, latent.StartRequest{Name: "bot1", Password: "fresh-password", MasterID: "master-1"})
	if err != nil {
		log.Fatal(err)
	}
	addr, _ := fake.Address("208.77.188.166")
	fmt.Println(addr.PublicIP, "->", addr.InstanceID == inst.ID)
	if err := bot1.Stop(ctx, inst); err != nil {
		log.Fatal(err)
	}
	addr, _ = fake.Address("208.77.188.166")
	fmt.Printf("%s -> %q\n", addr.PublicIP, addr.InstanceID)
	// Output:
	// 208.77.188.166 -> true
	// 208.77.188.166 -> ""
}

// Every option of a normal slave applies; for EC2, missing_timeout (how
// long an instance may take to attach) defaults to 20 minutes and
// build_wait_timeout to 10.
func ExampleSlaveOptions() {
	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.SlaveOptions(
			slave.MaxBuilds(1),
			slave.NotifyOnMissing("admin@example.org"),
		))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	fmt.Println(bot1.Slave().MissingTimeout(), bot1.BuildWaitTimeout(), bot1.Slave().NotifyOnMissing())

	bot2, err := ec2.New("bot2", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.SlaveOptions(slave.MissingTimeout(5*time.Minute)),
		ec2.BuildWaitTimeout(0)) // stop the instance after each build
	if err != nil {
		log.Fatal(err)
	}
	defer bot2.Close()
	fmt.Println(bot2.Slave().MissingTimeout(), bot2.BuildWaitTimeout())
	// Output:
	// 20m0s 10m0s [admin@example.org]
	// 5m0s 0s
}

// keypair_name and security_name default to latent_buildbot_slave; either
// is made if it does not exist yet.
func ExampleKeypairName() {
	fake := fakeEC2()
	defer fake.Close()

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.KeypairName("buildbot_keys"), ec2.SecurityName("buildbot_slaves"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake)
	fmt.Println(fake.KeyPairs(), fake.SecurityGroups())
	// Output:
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
	// [buildbot_keys] [buildbot_slaves]
}

// User data is a template rendered at each start with the master's
// address, the slave's name and the start's fresh password, so that a
// stock image can start a slave that attaches as this one. Anyone who may
// describe the instance's attributes can read it.
func ExampleUserData() {
	fake := ec2test.NewServer(ec2test.Options{
		OnRunning: func(b ec2test.Boot) { fmt.Printf("%s boots with %q\n", b.Tags[ec2.SlaveTag], b.UserData) },
	})
	defer fake.Close()
	fake.AddImage(ec2test.Image{ID: "ami-12345", Location: "buildbot/image.manifest.xml"})

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.MasterAddress("master.example.org:9989"),
		ec2.UserData("#!/bin/sh\nexec buildslave {{.Master}} {{.Name}} {{.Password}}\n"),
		ec2.Tags(map[string]string{"team": "ci"}),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake)
	// Output:
	// bot1 boots with "#!/bin/sh\nexec buildslave master.example.org:9989 bot1 fresh-password\n"
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
}

// Slaves that share a Client share its SDK client and its poller, which
// waits for all their instances with one DescribeInstances per poll
// interval. The application makes the Client, gives it to each slave, and
// closes it once the Lifecycle driving them has shut down.
func ExampleNewClient() {
	fake := fakeEC2()
	defer fake.Close()

	client, err := ec2.NewClient(
		ec2.Region("eu-west-1"),
		ec2.Identifier("publickey"), ec2.SecretIdentifier("privatekey"),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond)) // the fake, not AWS
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close() // after the Lifecycle's Shutdown or Close

	var slaves []*ec2.Slave
	for _, name := range []string{"bot1", "bot2"} {
		bot, err := ec2.New(name, "sekrit", "m1.large", ec2.AMI("ami-12345"), ec2.WithClient(client))
		if err != nil {
			log.Fatal(err)
		}
		slaves = append(slaves, bot)
	}
	for _, bot := range slaves {
		fmt.Println(bot, bot.Client() == client)
	}
	startStop(slaves[0], fake)
	// Output:
	// ec2 slave bot1 (m1.large in eu-west-1) true
	// ec2 slave bot2 (m1.large in eu-west-1) true
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
}

// Spot instances cost less; when EC2 has no spot capacity, the start
// falls back to an on-demand instance.
func ExampleSpotInstance() {
	fake := fakeEC2()
	defer fake.Close()
	fake.RefuseSpot("InsufficientInstanceCapacity")

	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
		ec2.AMI("ami-12345"),
		ec2.SpotInstance(0.05),
		ec2.Retry(1, time.Millisecond),
		ec2.Endpoint(fake.URL), ec2.PollInterval(10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer bot1.Close()
	startStop(bot1, fake)
	fmt.Println("spot:", fake.Instances()[0].Spot)
	// Output:
	// i-00000000000000001 ami-12345 m1.large running
	// i-00000000000000001 terminated
	// spot: false
}
