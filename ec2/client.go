package ec2

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
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

// ErrClosed is the error of a call on a closed Client, and of the waits
// for an instance that its Close ended.
var ErrClosed = errors.New("ec2: client closed")

// Client is one connection to EC2: an endpoint, a region and a set of
// credentials. It holds the SDK client with its retry counters and its
// HTTP connections, the key pairs and security groups known to exist, and
// the poller that waits for the instances of every slave using it with
// one batched DescribeInstances per poll interval. The poller's goroutine
// runs only while some call waits for an instance, and Close ends it.
//
// The application makes a Client with NewClient, gives it to each slave
// with WithClient, and closes it after the Lifecycle driving those slaves
// has shut down. A slave built without WithClient makes a Client of its
// own, which its Close closes.
type Client struct {
	region    string
	api       ec2API
	retries   *retryCounter
	poller    *poller
	transport *http.Transport
	log       *slog.Logger
	flight    singleflight.Group // concurrent identical look-ups run once

	mu      sync.Mutex
	ensured map[string]bool // "keypair NAME", "group NAME"

	closed    atomic.Bool
	closeOnce sync.Once
}

// NewClient makes a Client from the connection options: Region,
// Endpoint, Identifier and SecretIdentifier or AWSIDFilePath (else
// ~/.ec2/aws_id, else the SDK's default chain), PollInterval, Retry and
// Logger (the Client's own lines: failed polls). Without Region it reads
// the SDK's shared configuration (files and environment), else uses
// DefaultRegion. It makes no call; a slave's own options (AMI, …) are
// refused here.
func NewClient(opts ...Option) (*Client, error) {
	st := defaultSettings()
	for _, o := range opts {
		o(&st)
	}
	if st.logger == nil {
		st.logger = slog.Default()
	}
	bad := func(field, reason string) error { return &ClientConfigError{Field: field, Reason: reason} }
	var errs []error
	for _, f := range st.slaveFields {
		errs = append(errs, bad(f, "is a slave's setting: give it to ec2.New"))
	}
	if st.client != nil {
		errs = append(errs, bad("client", "WithClient is for ec2.New"))
	}
	errs = append(errs, validateClient(st, bad))
	creds, err := resolveCredentials(st, st.logger, bad)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c, err := newClient(st, creds)
	if err != nil {
		return nil, bad("region", err.Error())
	}
	return c, nil
}

// ClientConfigError is NewClient's error for one invalid option, naming
// it after EC2LatentBuildSlave's keyword argument.
type ClientConfigError struct {
	Field  string
	Reason string
}

func (e *ClientConfigError) Error() string { return "ec2 client: " + e.Field + ": " + e.Reason }

// validateClient checks the connection settings.
func validateClient(st settings, bad func(field, reason string) error) error {
	var errs []error
	if st.pollInterval <= 0 {
		errs = append(errs, bad("poll_interval", "must be positive, got "+st.pollInterval.String()))
	}
	if st.retryMaxAttempts < 1 || st.retryMaxBackoff <= 0 {
		errs = append(errs, bad("retry", "needs at least one attempt and a positive back-off"))
	}
	return errors.Join(errs...)
}

// newClient makes the SDK client of validated settings.
func newClient(st settings, creds credentialSource) (*Client, error) {
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
	// The SDK's HTTP client, as the shared configuration made it (a CA
	// bundle applied), rebuilt on a transport of our own so that Close can
	// close its idle connections.
	built, _ := cfg.HTTPClient.(*awshttp.BuildableClient)
	if built == nil {
		built = awshttp.NewBuildableClient()
	}
	transport := built.GetTransport()
	cfg.HTTPClient = &http.Client{
		Transport: transport,
		Timeout:   built.GetTimeout(),
		// EC2 does not redirect; the SDK's own client follows none that
		// changes the method.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	api := awsec2.NewFromConfig(cfg)
	c := &Client{
		region:    cfg.Region,
		api:       api,
		retries:   counter,
		transport: transport,
		log:       st.logger,
		ensured:   map[string]bool{},
	}
	c.poller = newPoller(api, st.pollInterval, st.logger)
	return c, nil
}

// Region is the AWS region the Client's calls go to.
func (c *Client) Region() string { return c.region }

// RetryStats returns the retries the Client's SDK calls have made.
func (c *Client) RetryStats() RetryStats { return c.retries.stats() }

// Close ends the Client: calls waiting for an instance return ErrClosed,
// the poller's goroutine has ended when Close returns, and idle
// connections are closed. Further calls through the Client fail with
// ErrClosed. Close the Client after the Lifecycle driving its slaves has
// shut down: a slave whose Client is closed can no longer stop its
// instances. Close is idempotent and returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.poller.close()
		c.transport.CloseIdleConnections()
	})
	return nil
}

// open returns ErrClosed once the Client is closed.
func (c *Client) open() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return nil
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
func (c *Client) once(ctx context.Context, key string, make func(context.Context) error) error {
	c.mu.Lock()
	done := c.ensured[key]
	c.mu.Unlock()
	if done {
		return nil
	}
	_, err, _ := c.flight.Do(key, func() (any, error) {
		if err := make(ctx); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.ensured[key] = true
		c.mu.Unlock()
		return nil, nil
	})
	return err
}
