package ec2

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/sync/singleflight"

	"github.com/buildslave/buildslave/internal/backoff"
)

// ec2API is the part of the EC2 API this package calls; *awsec2.Client
// has it, pointed at AWS or at an ec2test fake.
type ec2API interface {
	awsec2.DescribeImagesAPIClient
	awsec2.DescribeInstancesAPIClient
	awsec2.DescribeSecurityGroupsAPIClient
	DescribeKeyPairs(context.Context, *awsec2.DescribeKeyPairsInput, ...func(*awsec2.Options)) (*awsec2.DescribeKeyPairsOutput, error)
	CreateKeyPair(context.Context, *awsec2.CreateKeyPairInput, ...func(*awsec2.Options)) (*awsec2.CreateKeyPairOutput, error)
	CreateSecurityGroup(context.Context, *awsec2.CreateSecurityGroupInput, ...func(*awsec2.Options)) (*awsec2.CreateSecurityGroupOutput, error)
	RunInstances(context.Context, *awsec2.RunInstancesInput, ...func(*awsec2.Options)) (*awsec2.RunInstancesOutput, error)
	TerminateInstances(context.Context, *awsec2.TerminateInstancesInput, ...func(*awsec2.Options)) (*awsec2.TerminateInstancesOutput, error)
	DescribeAddresses(context.Context, *awsec2.DescribeAddressesInput, ...func(*awsec2.Options)) (*awsec2.DescribeAddressesOutput, error)
	AssociateAddress(context.Context, *awsec2.AssociateAddressInput, ...func(*awsec2.Options)) (*awsec2.AssociateAddressOutput, error)
	DisassociateAddress(context.Context, *awsec2.DisassociateAddressInput, ...func(*awsec2.Options)) (*awsec2.DisassociateAddressOutput, error)
}

var _ ec2API = (*awsec2.Client)(nil)

// region is what the slaves of one endpoint, region and set of
// credentials share: the SDK client, its retry counters, the poller, and
// the key pairs and security groups known to exist.
type region struct {
	name    string
	api     ec2API
	retries *retryCounter
	poller  *poller
	flight  singleflight.Group // concurrent identical look-ups run once

	mu      sync.Mutex
	ensured map[string]bool // "keypair NAME", "group NAME"
}

// regionKey tells shared regions apart; region is the one asked for, ""
// for the shared configuration's.
type regionKey struct {
	endpoint, region, credentials string
	pollInterval                  time.Duration
	retryMaxAttempts              int
	retryMaxBackoff               time.Duration
}

var regions = struct {
	sync.Mutex
	m map[regionKey]*region
}{m: map[regionKey]*region{}}

// sharedRegion returns the region the slave's settings name, making its
// client on first use from the SDK's shared configuration (files and
// environment, read then); it makes no call.
func sharedRegion(st settings, creds credentialSource) (*region, error) {
	key := regionKey{st.endpoint, st.region, creds.id, st.pollInterval, st.retryMaxAttempts, st.retryMaxBackoff}
	regions.Lock()
	defer regions.Unlock()
	if r, ok := regions.m[key]; ok {
		return r, nil
	}
	counter := &retryCounter{}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return counter.wrap(retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = st.retryMaxAttempts
				o.MaxBackoff = st.retryMaxBackoff
				o.Backoff = sdkBackoff(st.retryMaxBackoff)
				// Back-off alone paces retries: a shared retry quota would
				// fail every start at once in a throttling storm.
				o.RateLimiter = ratelimit.None
			}))
		}),
	}
	if st.region != "" {
		opts = append(opts, config.WithRegion(st.region))
	}
	if creds.provider != nil {
		opts = append(opts, config.WithCredentialsProvider(creds.provider))
	}
	if st.endpoint != "" {
		opts = append(opts, config.WithBaseEndpoint(st.endpoint))
	}
	cfg, err := config.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	client := awsec2.NewFromConfig(cfg)
	r := &region{
		name:    cfg.Region,
		api:     client,
		retries: counter,
		poller:  newPoller(client, st.pollInterval, st.logger),
		ensured: map[string]bool{},
	}
	regions.m[key] = r
	return r, nil
}

// sdkBackoff is the SDK retryer's back-off, as the SDK's
// ExponentialJitterBackoff: the wait before retry n is drawn uniformly
// from [0, 2^n s), at most maxBackoff (full jitter, at the cap too).
func sdkBackoff(maxBackoff time.Duration) retry.BackoffDelayer {
	return backoffDelayer{backoff.Policy{Min: min(2*time.Second, maxBackoff), Max: maxBackoff, Jitter: backoff.Full}}
}

type backoffDelayer struct{ p backoff.Policy }

// BackoffDelay is the wait before the attempt-th retry (from 1).
func (b backoffDelayer) BackoffDelay(attempt int, _ error) (time.Duration, error) {
	return b.p.Delay(attempt), nil
}

// retryCounter counts the retries the SDK's retryer makes.
type retryCounter struct {
	throttled, serverErrors atomic.Int64
}

func (c *retryCounter) wrap(r aws.RetryerV2) aws.RetryerV2 { return countingRetryer{r, c} }

func (c *retryCounter) stats() RetryStats {
	return RetryStats{Throttled: c.throttled.Load(), ServerErrors: c.serverErrors.Load()}
}

// countingRetryer is the SDK's standard retryer, counting each retry it
// decides to make.
type countingRetryer struct {
	aws.RetryerV2
	c *retryCounter
}

var throttles = retry.IsErrorThrottles(retry.DefaultThrottles)

// RetryDelay is called once for every retry the SDK makes.
func (r countingRetryer) RetryDelay(attempt int, err error) (time.Duration, error) {
	if throttles.IsErrorThrottle(err).Bool() {
		r.c.throttled.Add(1)
	} else {
		r.c.serverErrors.Add(1)
	}
	return r.RetryerV2.RetryDelay(attempt, err)
}

// once runs make the first time key is asked for, and again after it
// failed; concurrent callers share one run.
func (r *region) once(ctx context.Context, key string, make func(context.Context) error) error {
	r.mu.Lock()
	done := r.ensured[key]
	r.mu.Unlock()
	if done {
		return nil
	}
	_, err, _ := r.flight.Do(key, func() (any, error) {
		if err := make(ctx); err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.ensured[key] = true
		r.mu.Unlock()
		return nil, nil
	})
	return err
}
