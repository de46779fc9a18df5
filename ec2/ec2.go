// Package ec2 runs latent build slaves on Amazon EC2 instances, Buildbot 0.8.6's EC2LatentBuildSlave, on aws-sdk-go-v2.
//
// # Who owns what
//
// A Client is one connection to EC2 (an endpoint, a region, a set of
// credentials): the SDK client, its HTTP connections and retry counters,
// and the poller that waits for the instances of all its slaves with one
// batched DescribeInstances per poll interval. The package keeps no state
// of its own: nothing is shared between slaves unless the application
// shares it, by giving one Client to several slaves.
//
// Whoever makes a Client closes it:
//
//   - The application that wants its slaves to share one poller makes a
//     Client with NewClient, gives it to each slave with WithClient, and
//     closes it after the latent Lifecycle driving those slaves has shut
//     down.
//   - A slave built without WithClient, as Buildbot's EC2LatentBuildSlave
//     is (keys and region among its own options), makes a Client of its
//     own; the slave's Close closes it.
//
// The Lifecycle does not close drivers: it drives slaves the application
// made and may hand to another Lifecycle, and a shared Client outlives
// any one slave. Either way the poller's goroutine runs only while a
// Start, Stop or Check waits for an instance, stops at once when the last
// of them gives up, and is waited for by Close: once the Lifecycle has
// closed (which ends every driver call), no goroutine of this package is
// left.
package ec2

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// Defaults from Buildbot 0.8.6's EC2LatentBuildSlave, and this package's own.
const (
	// DefaultMissingTimeout is how long a started instance may take to
	// attach (missing_timeout: 20 minutes for a latent slave, as in
	// Buildbot 0.8.6's manual).
	DefaultMissingTimeout = latent.DefaultMissingTimeout
	// DefaultBuildWaitTimeout is how long an idle instance is kept after a
	// build (build_wait_timeout).
	DefaultBuildWaitTimeout = latent.DefaultBuildWaitTimeout
	// DefaultKeypairName and DefaultSecurityName name the key pair and the
	// security group (keypair_name, security_name).
	DefaultKeypairName  = "latent_buildbot_slave"
	DefaultSecurityName = "latent_buildbot_slave"
	// DefaultRegion is used when neither Region nor the SDK's shared
	// configuration names one, as boto did.
	DefaultRegion = "us-east-1"
	// DefaultPollInterval is how often the poller describes the instances
	// it waits for.
	DefaultPollInterval = 5 * time.Second
	// DefaultStopTimeout bounds how long Stop waits for terminated.
	DefaultStopTimeout = 10 * time.Minute
	// DefaultRetryMaxAttempts and DefaultRetryMaxBackoff configure the
	// SDK's retryer for throttling (RequestLimitExceeded) and 5xx answers.
	DefaultRetryMaxAttempts = 8
	DefaultRetryMaxBackoff  = 20 * time.Second
)

// Tag keys every instance carries.
const (
	MasterTag = "buildslave:master" // StartRequest.MasterID
	SlaveTag  = "buildslave:slave"  // the slave's name
)

// Slave is an EC2 latent slave: Buildbot 0.8.6's EC2LatentBuildSlave.
// Build it with New, configured the way Buildbot 0.8.6's manual configures
// EC2LatentBuildSlave:
//
//	bot1, err := ec2.New("bot1", "sekrit", "m1.large",
//		ec2.AMI("ami-12345"),
//		ec2.Identifier("publickey"), ec2.SecretIdentifier("privatekey"))
//
// and hand it to the latent Lifecycle, which starts and stops its
// instances: it implements latent.LatentSlave, latent.Lister and
// latent.Checker. Every instance carries the tags MasterTag (the master's
// id) and SlaveTag (the slave's name), so that List finds the instances a
// crashed master left behind.
//
// Slaves given one Client with WithClient share its SDK client and its
// poller; a slave without one has a Client of its own, which Close closes.
type Slave struct {
	slave        *slave.Slave
	instanceType string
	groupName    string // the security group by name; empty in a VPC
	settings     settings
	regex        *regexp.Regexp
	userData     *template.Template
	client       *Client
	ownsClient   bool // New made client: Close closes it
	log          *slog.Logger
}

var (
	_ latent.LatentSlave    = (*Slave)(nil)
	_ latent.PasswordPasser = (*Slave)(nil)
	_ latent.Lister         = (*Slave)(nil)
	_ latent.Checker        = (*Slave)(nil)
)

// settings holds what the Options set, named after EC2LatentBuildSlave's
// arguments.
type settings struct {
	slaveOptions          []slave.Option
	ami                   string
	validAMIOwners        []int64
	validAMILocationRegex *string
	identifier            string
	secretIdentifier      string
	awsIDFilePath         string
	elasticIP             string
	keypairName           string
	securityName          *string
	buildWaitTimeout      time.Duration
	region                string
	endpoint              string
	subnetID              string
	securityGroupIDs      []string
	instanceProfile       string
	blockDeviceMappings   []types.BlockDeviceMapping
	userData              *string
	masterAddress         string
	tags                  map[string]string
	spot                  bool
	maxSpotPrice          float64
	pollInterval          time.Duration
	stopTimeout           time.Duration
	retryMaxAttempts      int
	retryMaxBackoff       time.Duration
	logger                *slog.Logger
	client                *Client
	withClient            bool
	// The options given, by EC2LatentBuildSlave's keyword: a slave's own, refused
	// by NewClient, and a Client's, refused by New next to WithClient.
	slaveFields, clientFields []string
}

func defaultSettings() settings {
	return settings{
		keypairName:      DefaultKeypairName,
		buildWaitTimeout: DefaultBuildWaitTimeout,
		pollInterval:     DefaultPollInterval,
		stopTimeout:      DefaultStopTimeout,
		retryMaxAttempts: DefaultRetryMaxAttempts,
		retryMaxBackoff:  DefaultRetryMaxBackoff,
	}
}

// Option sets one of a Slave's optional settings, or a Client's; each is
// named after EC2LatentBuildSlave's keyword argument where it has one. The Client's
// are Region, Endpoint, Identifier, SecretIdentifier, AWSIDFilePath,
// PollInterval and Retry; Logger is both; the others are a slave's.
type Option func(*settings)

// slaveSetting is an Option of a slave's own.
func slaveSetting(field string, set func(*settings)) Option {
	return func(s *settings) { s.slaveFields = append(s.slaveFields, field); set(s) }
}

// clientSetting is an Option of the Client's.
func clientSetting(field string, set func(*settings)) Option {
	return func(s *settings) { s.clientFields = append(s.clientFields, field); set(s) }
}

// WithClient makes the slave use c, shared with the other slaves given it:
// its SDK client, its poller and its credentials. The Client's options
// (Region, Endpoint, keys, PollInterval, Retry) are then refused here:
// they belong to NewClient. The slave's Close leaves c open: c's owner
// closes it.
func WithClient(c *Client) Option {
	return func(s *settings) { s.client, s.withClient = c, true }
}

// SlaveOptions passes options of a normal slave through: properties,
// max_builds, keepalive_interval, notify_on_missing, missing_timeout.
// missing_timeout defaults to DefaultMissingTimeout here.
func SlaveOptions(opts ...slave.Option) Option {
	return slaveSetting("slave_options", func(s *settings) { s.slaveOptions = append(s.slaveOptions, opts...) })
}

// AMI sets the machine image to start (ami=).
func AMI(id string) Option { return slaveSetting("ami", func(s *settings) { s.ami = id }) }

// ValidAMIOwners picks the image among those of these AWS accounts, by
// their 12-digit numbers (valid_ami_owners=).
func ValidAMIOwners(accounts ...int64) Option {
	return slaveSetting("valid_ami_owners", func(s *settings) { s.validAMIOwners = append([]int64{}, accounts...) })
}

// ValidAMILocationRegex picks the image among those whose location (S3
// bucket and manifest name) the regular expression matches from its start
// (valid_ami_location_regex=). Of those, the one that sorts last wins,
// sorted by the first group if there is one, numerically if every
// candidate's group is an integer. Without ValidAMIOwners the look-up
// describes every image the account may launch, public ones included.
func ValidAMILocationRegex(expr string) Option {
	return slaveSetting("valid_ami_location_regex", func(s *settings) { s.validAMILocationRegex = &expr })
}

// Identifier sets the AWS access key id (identifier=).
func Identifier(accessKeyID string) Option {
	return clientSetting("identifier", func(s *settings) { s.identifier = accessKeyID })
}

// SecretIdentifier sets the AWS secret access key (secret_identifier=).
func SecretIdentifier(secretAccessKey string) Option {
	return clientSetting("secret_identifier", func(s *settings) { s.secretIdentifier = secretAccessKey })
}

// AWSIDFilePath names the file holding the access key id on its first
// line and the secret access key on its second (aws_id_file_path=); the
// default is ~/.ec2/aws_id, used if it exists.
func AWSIDFilePath(path string) Option {
	return clientSetting("aws_id_file_path", func(s *settings) { s.awsIDFilePath = path })
}

// ElasticIP associates this elastic IP address with each instance once it
// runs, and disassociates it before the instance is terminated
// (elastic_ip=).
func ElasticIP(publicIP string) Option {
	return slaveSetting("elastic_ip", func(s *settings) { s.elasticIP = publicIP })
}

// KeypairName names the key pair instances start with (keypair_name=),
// made if missing; default DefaultKeypairName.
func KeypairName(name string) Option {
	return slaveSetting("keypair_name", func(s *settings) { s.keypairName = name })
}

// SecurityName names the security group instances start in
// (security_name=), made if missing; default DefaultSecurityName. It is not
// used with SubnetID or SecurityGroupIDs.
func SecurityName(name string) Option {
	return slaveSetting("security_name", func(s *settings) { s.securityName = &name })
}

// BuildWaitTimeout sets how long an idle instance is kept after a build
// (build_wait_timeout=): 0 stops it after each build, negative never.
func BuildWaitTimeout(d time.Duration) Option {
	return slaveSetting("build_wait_timeout", func(s *settings) { s.buildWaitTimeout = d })
}

// Region sets the AWS region; the default is the SDK's shared
// configuration's, else DefaultRegion.
func Region(name string) Option {
	return clientSetting("region", func(s *settings) { s.region = name })
}

// Endpoint sends every EC2 call to this URL instead of the region's AWS
// endpoint: an ec2test fake, a VPC endpoint, a proxy.
func Endpoint(url string) Option {
	return clientSetting("endpoint", func(s *settings) { s.endpoint = url })
}

// SubnetID starts instances in this VPC subnet (subnet_id=).
func SubnetID(id string) Option {
	return slaveSetting("subnet_id", func(s *settings) { s.subnetID = id })
}

// SecurityGroupIDs starts instances in these VPC security groups
// (security_group_ids=), instead of the one named by SecurityName.
func SecurityGroupIDs(ids ...string) Option {
	return slaveSetting("security_group_ids", func(s *settings) { s.securityGroupIDs = slices.Clone(ids) })
}

// InstanceProfile gives instances this IAM instance profile, by name or
// ARN (instance_profile_name=).
func InstanceProfile(nameOrARN string) Option {
	return slaveSetting("instance_profile_name", func(s *settings) { s.instanceProfile = nameOrARN })
}

// BlockDeviceMappings sets the instances' block devices
// (block_device_map=). EBS volumes are deleted on termination unless the
// mapping says otherwise.
func BlockDeviceMappings(m ...types.BlockDeviceMapping) Option {
	m = slices.Clone(m)
	for i, d := range m {
		if d.Ebs != nil && d.Ebs.DeleteOnTermination == nil {
			ebs := *d.Ebs
			ebs.DeleteOnTermination = aws.Bool(true)
			m[i].Ebs = &ebs
		}
	}
	return slaveSetting("block_device_map", func(s *settings) { s.blockDeviceMappings = m })
}

// UserData sets the instances' user data, a text/template rendered at
// each start with UserDataVars, at most 16 KiB once rendered.
//
// User data is not secret: anyone allowed ec2:DescribeInstanceAttribute
// can read it, and so can every process on the instance (through the
// metadata service). The per-start password it carries is good only while
// that start waits for its attach; keep anything else secret out of it.
func UserData(tmpl string) Option {
	return slaveSetting("user_data", func(s *settings) { s.userData = &tmpl })
}

// MasterAddress is the address the instances attach to, given to the
// user data template as {{.Master}}.
func MasterAddress(hostPort string) Option {
	return slaveSetting("master_address", func(s *settings) { s.masterAddress = hostPort })
}

// Tags adds the user's own tags to every instance (tags=); MasterTag and
// SlaveTag are set by the package.
func Tags(tags map[string]string) Option {
	return slaveSetting("tags", func(s *settings) { s.tags = maps.Clone(tags) })
}

// SpotInstance starts spot instances at most at maxSpotPrice US dollars an
// hour (spot_instance=True, max_spot_price=); when EC2 refuses spot
// capacity, the start falls back to an on-demand instance.
func SpotInstance(maxSpotPrice float64) Option {
	return slaveSetting("spot_instance", func(s *settings) { s.spot, s.maxSpotPrice = true, maxSpotPrice })
}

// PollInterval sets how often the Client's poller describes the
// instances waited for; default DefaultPollInterval.
func PollInterval(d time.Duration) Option {
	return clientSetting("poll_interval", func(s *settings) { s.pollInterval = d })
}

// StopTimeout bounds how long Stop waits for the instance to be
// terminated; default DefaultStopTimeout.
func StopTimeout(d time.Duration) Option {
	return slaveSetting("stop_timeout", func(s *settings) { s.stopTimeout = d })
}

// Retry configures the SDK's retryer: how many attempts a call gets and
// the longest back-off between them, for throttling and 5xx answers.
func Retry(maxAttempts int, maxBackoff time.Duration) Option {
	return clientSetting("retry", func(s *settings) { s.retryMaxAttempts, s.retryMaxBackoff = maxAttempts, maxBackoff })
}

// Logger receives the slave's log lines (never a secret); nil means the
// Client's logger for a slave given WithClient, else slog.Default(). Given
// to NewClient, it receives the Client's own lines (failed polls); a
// slave's own Client logs to the slave's Logger.
func Logger(l *slog.Logger) Option { return func(s *settings) { s.logger = l } }

// UserDataVars is what the UserData template sees.
type UserDataVars struct {
	Master   string // MasterAddress
	Name     string // the slave's name
	Password string // the fresh password of this start
	MasterID string // the master's id
}

// New builds an EC2 latent slave from a name, a password and an instance
// type, EC2LatentBuildSlave's three required arguments, plus options, and
// validates it; the errors are *slave.ConfigError naming the field by its
// EC2LatentBuildSlave keyword (ami, instance_type, ...). New reads
// the credentials (and warns if their file is readable by others) but
// makes no EC2 call.
func New(name, password, instanceType string, opts ...Option) (*Slave, error) {
	st := defaultSettings()
	for _, o := range opts {
		o(&st)
	}
	if st.logger == nil {
		st.logger = slog.Default()
		if st.client != nil {
			st.logger = st.client.log
		}
	}
	sl, err := slave.New(name, password, append([]slave.Option{slave.MissingTimeout(DefaultMissingTimeout)}, st.slaveOptions...)...)
	s := &Slave{slave: sl, settings: st, log: st.logger.With("slave", name)}
	bad := func(field, reason string) error {
		return &slave.ConfigError{Slave: name, Field: field, Reason: reason}
	}
	errs := []error{err}
	if instanceType == "" {
		errs = append(errs, bad("instance_type", "must not be empty"))
	}
	errs = append(errs, s.validateAMI(bad), s.validateNetwork(bad), s.validateLaunch(bad))
	var creds credentialSource
	switch {
	case st.withClient && st.client == nil:
		errs = append(errs, bad("client", "WithClient(nil): give a Client from NewClient, or leave WithClient out"))
	case st.withClient:
		for _, f := range uniq(st.clientFields) {
			errs = append(errs, bad(f, "is the shared Client's setting: give it to ec2.NewClient, not to a slave given WithClient"))
		}
	default:
		errs = append(errs, validateClient(st, bad))
		creds, err = resolveCredentials(st, s.log, bad)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.client = st.client
	if s.client == nil {
		if s.client, err = newClient(st, creds); err != nil {
			return nil, bad("region", err.Error())
		}
		s.ownsClient = true
	}
	s.instanceType, s.groupName = instanceType, s.securityGroupName()
	return s, nil
}

// uniq sorts fields and drops repeats.
func uniq(fields []string) []string { return slices.Compact(slices.Sorted(slices.Values(fields))) }

func (s *Slave) validateAMI(bad func(field, reason string) error) error {
	st := s.settings
	filtered := st.validAMIOwners != nil || st.validAMILocationRegex != nil
	if (st.ami != "") == filtered {
		return bad("ami", "give either ami or one or both of valid_ami_owners and valid_ami_location_regex")
	}
	var errs []error
	if st.ami != "" && !strings.HasPrefix(st.ami, "ami-") {
		errs = append(errs, bad("ami", fmt.Sprintf("%q is not an AMI id (ami-…)", st.ami)))
	}
	if st.validAMIOwners != nil && len(st.validAMIOwners) == 0 {
		errs = append(errs, bad("valid_ami_owners", "must name at least one account"))
	}
	for _, o := range st.validAMIOwners {
		if o <= 0 || o > 999_999_999_999 {
			errs = append(errs, bad("valid_ami_owners", fmt.Sprintf("%d is not a 12-digit AWS account number", o)))
		}
	}
	if st.validAMILocationRegex != nil {
		re, err := compileLocationRegex(*st.validAMILocationRegex)
		if err != nil {
			errs = append(errs, bad("valid_ami_location_regex", err.Error()))
		}
		s.regex = re
	}
	return errors.Join(errs...)
}

func (s *Slave) validateNetwork(bad func(field, reason string) error) error {
	st := s.settings
	var errs []error
	if st.keypairName == "" {
		errs = append(errs, bad("keypair_name", "must not be empty"))
	}
	vpc := st.subnetID != "" || len(st.securityGroupIDs) > 0
	switch {
	case st.securityName != nil && *st.securityName == "":
		errs = append(errs, bad("security_name", "must not be empty"))
	case st.securityName != nil && vpc:
		errs = append(errs, bad("security_name", "is not used in a VPC (subnet_id, security_group_ids): use security_group_ids"))
	}
	for _, id := range st.securityGroupIDs {
		if !strings.HasPrefix(id, "sg-") {
			errs = append(errs, bad("security_group_ids", fmt.Sprintf("%q is not a security group id (sg-…)", id)))
		}
	}
	if st.subnetID != "" && !strings.HasPrefix(st.subnetID, "subnet-") {
		errs = append(errs, bad("subnet_id", fmt.Sprintf("%q is not a subnet id (subnet-…)", st.subnetID)))
	}
	return errors.Join(errs...)
}

func (s *Slave) validateLaunch(bad func(field, reason string) error) error {
	st := s.settings
	var errs []error
	if st.spot && !(st.maxSpotPrice > 0) {
		errs = append(errs, bad("max_spot_price", fmt.Sprintf("must be positive, got %v", st.maxSpotPrice)))
	}
	for k := range st.tags {
		switch {
		case k == "" || len(k) > 128:
			errs = append(errs, bad("tags", fmt.Sprintf("key %q must have 1 to 128 characters", k)))
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			errs = append(errs, bad("tags", fmt.Sprintf("key %q: the aws: prefix is reserved", k)))
		case k == MasterTag || k == SlaveTag:
			errs = append(errs, bad("tags", fmt.Sprintf("key %q is set by the ec2 package", k)))
		}
	}
	if st.stopTimeout <= 0 {
		errs = append(errs, bad("stop_timeout", fmt.Sprintf("must be positive, got %v", st.stopTimeout)))
	}
	if st.userData != nil {
		t, err := template.New("user_data").Option("missingkey=error").Parse(*st.userData)
		if err == nil {
			_, err = renderUserData(t, UserDataVars{})
		}
		if err != nil {
			errs = append(errs, bad("user_data", err.Error()))
		}
		s.userData = t
	}
	return errors.Join(errs...)
}

// securityGroupName is the group to start instances in by name, or ""
// in a VPC.
func (s *Slave) securityGroupName() string {
	st := s.settings
	switch {
	case st.securityName != nil:
		return *st.securityName
	case st.subnetID != "" || len(st.securityGroupIDs) > 0:
		return ""
	}
	return DefaultSecurityName
}

// Slave is the slave's configuration: name, password and the options of a
// normal slave.
func (s *Slave) Slave() *slave.Slave { return s.slave }

// BuildWaitTimeout is how long an idle instance is kept after its last build.
func (s *Slave) BuildWaitTimeout() time.Duration { return s.settings.buildWaitTimeout }

// InstanceType is the EC2 instance type the slave starts.
func (s *Slave) InstanceType() string { return s.instanceType }

// String names the slave and its instance type; it never shows a password
// or a key.
func (s *Slave) String() string {
	return fmt.Sprintf("ec2 slave %s (%s in %s)", s.slave.Name(), s.instanceType, s.client.region)
}

// LogValue is what slog shows of a Slave: the same as String.
func (s *Slave) LogValue() slog.Value { return slog.StringValue(s.String()) }

// RetryStats counts the retries of a Client's SDK calls.
type RetryStats struct {
	Throttled    int64 // RequestLimitExceeded and other throttling answers
	ServerErrors int64 // 5xx answers and other transient failures
}

// RetryStats returns the retries counted so far on this slave's Client,
// which counts those of every slave sharing it.
func (s *Slave) RetryStats() RetryStats { return s.client.RetryStats() }

// Client is the Client the slave calls EC2 through: the one given with
// WithClient, or its own.
func (s *Slave) Client() *Client { return s.client }

// Close closes the slave's own Client, the one New made because no
// WithClient was given; a shared Client is left to its owner. Call it
// after the Lifecycle driving the slave has shut down.
func (s *Slave) Close() error {
	if s.ownsClient {
		return s.client.Close()
	}
	return nil
}

func formatPrice(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }

// PassesPassword reports whether the user data hands instances their
// start's password ({{.Password}}): then only that password admits an
// attach while an instance starts. Without it, instances attach with the
// configured password.
func (s *Slave) PassesPassword() bool {
	if s.userData == nil {
		return false
	}
	a, errA := renderUserData(s.userData, UserDataVars{Password: "a"})
	b, errB := renderUserData(s.userData, UserDataVars{Password: "b"})
	return errA == nil && errB == nil && a != b
}
