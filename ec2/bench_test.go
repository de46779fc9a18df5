package ec2_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/latent"
)

// BenchmarkStart1000 starts 1,000 EC2 latent slaves at once against the
// fake, whose instances boot in 2 s, and waits until all run. It reports
// the wall time of that, and how many DescribeInstances the poller of the
// Client they share made: about one per poll interval, where a loop per
// instance would make 1,000 per interval. Run it with -benchtime=1x.
func BenchmarkStart1000(b *testing.B) {
	const (
		n        = 1000
		boot     = 2 * time.Second
		interval = 500 * time.Millisecond
	)
	var elapsed time.Duration
	var describes int
	for b.Loop() {
		b.StopTimer()
		fake := ec2test.NewServer(ec2test.Options{BootDelay: boot})
		fake.AddImage(ec2test.Image{ID: "ami-12345", Location: "bucket/image.manifest.xml"})
		client, err := ec2.NewClient(ec2.Identifier("AKIDBENCH"), ec2.SecretIdentifier("secret"),
			ec2.Endpoint(fake.URL), ec2.PollInterval(interval), ec2.Logger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		slaves := make([]*ec2.Slave, n)
		for i := range slaves {
			s, err := ec2.New(fmt.Sprintf("bot%04d", i), "sekrit", "m1.large", ec2.AMI("ami-12345"), ec2.WithClient(client))
			if err != nil {
				b.Fatal(err)
			}
			slaves[i] = s
		}
		insts := make([]latent.Instance, n)
		ctx := context.Background()
		b.StartTimer()

		began := time.Now()
		var wg sync.WaitGroup
		for i, s := range slaves {
			wg.Go(func() {
				inst, err := s.Start(ctx, latent.StartRequest{Name: s.Slave().Name(), Password: "p", MasterID: "bench"})
				if err != nil {
					b.Error(err)
				}
				insts[i] = inst
			})
		}
		wg.Wait()
		elapsed = time.Since(began)
		describes = fake.Calls("DescribeInstances")

		b.StopTimer()
		for i, s := range slaves {
			wg.Go(func() {
				if err := s.Stop(ctx, insts[i]); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		fake.AssertNoneRunning(b)
		client.Close()
		fake.Close()
		b.StartTimer()
	}
	b.ReportMetric(elapsed.Seconds(), "s-to-all-running")
	b.ReportMetric(float64(describes), "DescribeInstances")
	b.ReportMetric(float64(describes)/elapsed.Seconds(), "DescribeInstances/s")
	b.ReportMetric(float64(n)/interval.Seconds(), "per-instance-loop-DescribeInstances/s")
}
