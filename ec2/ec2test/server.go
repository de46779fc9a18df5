// Package ec2test is a fake Amazon EC2 endpoint, speaking the EC2 Query API on 127.0.0.1, for testing code that uses the real aws-sdk-go-v2 EC2 client.
package ec2test

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultOwnerID is the account the fake's caller is, unless Options.OwnerID says otherwise.
const DefaultOwnerID = "123456789012"

// DefaultRetention is how long a terminated instance stays visible.
const DefaultRetention = time.Hour

// Options configure a Server; the zero value is a fake whose instances
// run and terminate at once.
type Options struct {
	// BootDelay is how long an instance stays pending.
	BootDelay time.Duration
	// TerminateDelay is how long an instance stays shutting-down.
	TerminateDelay time.Duration
	// Retention is how long a terminated instance stays visible to
	// DescribeInstances; zero means DefaultRetention.
	Retention time.Duration
	// OwnerID is the caller's account number; empty means DefaultOwnerID.
	OwnerID string
	// OnRunning, if set, is called once for each instance as it becomes
	// running, outside the fake's lock, from whichever request or Advance
	// noticed it. It must return promptly: start long work (a slave that
	// attaches with the user data's password) on a goroutine you own.
	OnRunning func(Boot)
	// OnTerminated, if set, is called once for each instance as it becomes
	// terminated, like OnRunning: the place to drop the connections of a
	// slave that ran on it, as the machine's end would.
	OnTerminated func(instanceID string)
}

// Boot is what OnRunning learns about an instance that has just come up.
type Boot struct {
	InstanceID string
	Tags       map[string]string
	// UserData is the decoded user data the instance was launched with.
	UserData string
}

// Image is an AMI the fake knows.
type Image struct {
	ID string // ami-…
	// Owner is the owning account number; empty means Options.OwnerID.
	Owner string
	// Location is the S3 bucket and manifest name, e.g. "bucket/ubuntu-10.manifest.xml".
	Location string
	// State is "available" (the default), "pending" or "failed".
	State string
}

// Instance is the fake's record of one launched instance.
type Instance struct {
	ID, ImageID, InstanceType, KeyName string
	SecurityGroups                     []string // by name
	SecurityGroupIDs                   []string
	SubnetID                           string
	InstanceProfile                    string // name or ARN
	BlockDevices                       []string
	Tags                               map[string]string
	UserData                           string // decoded
	// Spot is set for spot instances, with the max price asked.
	Spot         bool
	SpotMaxPrice string
	ClientToken  string
	State        string // pending, running, shutting-down, terminated
	// StateReason is the code of why the instance was stopped, if it was.
	StateReason string
	PublicIP    string // associated elastic IP
	LaunchTime  time.Time
	// Vanished is set once a terminated instance is no longer visible.
	Vanished bool
}

// Address is an elastic IP address.
type Address struct {
	PublicIP, AllocationID, AssociationID, InstanceID string
}

type instance struct {
	Instance
	reservationID string
	changedAt     time.Time // when the current state began
	reasonMessage string
}

// Server is the fake endpoint. Its methods are safe for concurrent use.
//
// Point the SDK at it with a custom BaseEndpoint, static credentials and
// any region:
//
//	fake := ec2test.NewServer(ec2test.Options{BootDelay: time.Second})
//	defer fake.Close()
//	client := ec2.New(ec2.Options{
//		BaseEndpoint: aws.String(fake.URL),
//		Region:       "us-east-1",
//		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
//	})
//
// The fake answers exactly the actions the ec2 package uses: RunInstances,
// DescribeInstances, TerminateInstances, DescribeImages, DescribeKeyPairs,
// CreateKeyPair, DescribeSecurityGroups, CreateSecurityGroup,
// DescribeAddresses, AssociateAddress and DisassociateAddress; any other
// is refused with InvalidAction. Requests must be signed (SigV4; the
// signature is not checked, the access key id is recorded). Errors come
// back as EC2 sends them,
// <Response><Errors><Error><Code>…</Code><Message>…</Message></Error></Errors><RequestID>…</RequestID></Response>,
// with 400 for the caller's mistakes, 500 for server errors and capacity,
// and 503 for RequestLimitExceeded.
//
// Time: instances go pending → running after Options.BootDelay and
// shutting-down → terminated after Options.TerminateDelay; a terminated
// instance stays visible for Options.Retention and then vanishes, as on
// EC2. States are worked out from the clock whenever the fake is asked,
// so no goroutine runs behind your back. The clock is time.Now plus what
// Advance has added: tests either use short real delays, or long ones and
// call Advance to move the fake on at once. (Under testing/synctest,
// time.Now is the bubble's clock only for handlers running in the bubble;
// an httptest server's do not, so use Advance there.)
type Server struct {
	// URL is the endpoint, http://127.0.0.1:port, for BaseEndpoint.
	URL string

	opts Options
	srv  *httptest.Server

	mu          sync.Mutex
	offset      time.Duration
	seq         map[string]int // per id prefix
	requests    int            // for request ids
	images      map[string]Image
	keyPairs    map[string]keyPairXML
	groups      map[string]securityGroupXML // by name
	addresses   map[string]*Address         // by public IP
	instances   []*instance                 // the ledger, in launch order
	byToken     map[string]string           // client token → reservation id
	calls       map[string]int
	failures    map[string][]string // action → codes of the calls to fail next
	lose        map[string]int      // action → how many answers to lose
	spotRefusal string
	accessKeys  map[string]bool
}

// NewServer starts a fake on 127.0.0.1. Close it when done.
func NewServer(opts Options) *Server {
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.OwnerID == "" {
		opts.OwnerID = DefaultOwnerID
	}
	s := &Server{
		opts:       opts,
		seq:        map[string]int{},
		images:     map[string]Image{},
		keyPairs:   map[string]keyPairXML{},
		groups:     map[string]securityGroupXML{},
		addresses:  map[string]*Address{},
		byToken:    map[string]string{},
		calls:      map[string]int{},
		failures:   map[string][]string{},
		lose:       map[string]int{},
		accessKeys: map[string]bool{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	return s
}

// Close shuts the endpoint down.
func (s *Server) Close() { s.srv.Close() }

func (s *Server) now() time.Time { return time.Now().Add(s.offset) }

// newID returns prefix-NNN…, 17 hex digits as EC2's long ids have,
// counting from 1 for each prefix.
func (s *Server) newID(prefix string) string {
	s.seq[prefix]++
	return fmt.Sprintf("%s-%017x", prefix, s.seq[prefix])
}

// Advance moves the fake's clock forward by d, and settles every instance
// whose delay has passed.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	s.offset += d
	s.mu.Unlock()
	s.locked(func() {})
}

// locked runs f under the lock once the instances are settled, then tells
// the hooks what changed.
func (s *Server) locked(f func()) {
	s.mu.Lock()
	ev := s.settle()
	f()
	s.mu.Unlock()
	s.tell(ev)
}

// events are the state changes the hooks are told about.
type events struct {
	boots      []Boot
	terminated []string
}

// settle moves instances whose delays have passed to their next state,
// and returns the changes. Called with s.mu held.
func (s *Server) settle() events {
	now := s.now()
	var ev events
	for _, in := range s.instances {
		switch {
		case in.State == "pending" && !now.Before(in.changedAt.Add(s.opts.BootDelay)):
			in.State, in.changedAt = "running", in.changedAt.Add(s.opts.BootDelay)
			ev.boots = append(ev.boots, Boot{InstanceID: in.ID, Tags: maps.Clone(in.Tags), UserData: in.UserData})
		case in.State == "shutting-down" && !now.Before(in.changedAt.Add(s.opts.TerminateDelay)):
			in.State, in.changedAt = "terminated", in.changedAt.Add(s.opts.TerminateDelay)
			s.releaseAddress(in)
			ev.terminated = append(ev.terminated, in.ID)
		}
		if in.State == "terminated" && !in.Vanished && !now.Before(in.changedAt.Add(s.opts.Retention)) {
			in.Vanished = true
		}
	}
	return ev
}

// tell calls the hooks; s.mu is not held.
func (s *Server) tell(ev events) {
	for _, b := range ev.boots {
		if s.opts.OnRunning != nil {
			s.opts.OnRunning(b)
		}
	}
	for _, id := range ev.terminated {
		if s.opts.OnTerminated != nil {
			s.opts.OnTerminated(id)
		}
	}
}

// releaseAddress drops the elastic IP association of a terminated instance.
func (s *Server) releaseAddress(in *instance) {
	for _, a := range s.addresses {
		if a.InstanceID == in.ID {
			a.InstanceID, a.AssociationID = "", ""
		}
	}
	in.PublicIP = ""
}

// AddImage registers an AMI.
func (s *Server) AddImage(img Image) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if img.Owner == "" {
		img.Owner = s.opts.OwnerID
	}
	if img.State == "" {
		img.State = "available"
	}
	s.images[img.ID] = img
}

// AddKeyPair registers a key pair, as if made earlier.
func (s *Server) AddKeyPair(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addKeyPair(name)
}

func (s *Server) addKeyPair(name string) keyPairXML {
	k := keyPairXML{KeyPairID: s.newID("key"), KeyName: name, KeyFingerprint: "1f:51:ae:28:bf:89:e9:d8:1f:25:5d:37:2d:7d:b8:ca:9f:f5:f1:6f"}
	s.keyPairs[name] = k
	return k
}

// AddSecurityGroup registers a security group, as if made earlier, and
// returns its id.
func (s *Server) AddSecurityGroup(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addSecurityGroup(name, "made by the test").GroupID
}

func (s *Server) addSecurityGroup(name, description string) securityGroupXML {
	g := securityGroupXML{OwnerID: s.opts.OwnerID, GroupID: s.newID("sg"), GroupName: name, GroupDescription: description}
	s.groups[name] = g
	return g
}

// AllocateAddress allocates the elastic IP publicIP to the account and
// returns its allocation id.
func (s *Server) AllocateAddress(publicIP string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &Address{PublicIP: publicIP, AllocationID: s.newID("eipalloc")}
	s.addresses[publicIP] = a
	return a.AllocationID
}

// Address returns the state of an elastic IP.
func (s *Server) Address(publicIP string) (Address, bool) {
	var a Address
	var ok bool
	s.locked(func() {
		var p *Address
		if p, ok = s.addresses[publicIP]; ok {
			a = *p
		}
	})
	return a, ok
}

// KeyPairs returns the names of the key pairs, sorted.
func (s *Server) KeyPairs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.keyPairs))
}

// SecurityGroups returns the names of the security groups, sorted.
func (s *Server) SecurityGroups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.groups))
}

// FailNext makes the next n calls of action fail with the EC2 error code
// (RequestLimitExceeded, InternalError, InsufficientInstanceCapacity,
// InvalidAMIID.NotFound, …), answered with that code's HTTP status.
func (s *Server) FailNext(action string, n int, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures[action] = append(s.failures[action], code)
	}
}

// LoseResponses makes the next n calls of action take effect but lose
// their answer: the fake closes the connection instead of responding, as
// a network failure after the request arrived would.
func (s *Server) LoseResponses(action string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lose[action] += n
}

// RefuseSpot makes every spot RunInstances fail with code (for example
// InsufficientInstanceCapacity or SpotMaxPriceTooLow) until called with "".
func (s *Server) RefuseSpot(code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spotRefusal = code
}

// TerminateOutside terminates an instance as someone else would (the
// console, another tool), with the user-initiated state reason.
func (s *Server) TerminateOutside(id string) {
	s.stopOutside(id, "Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown")
}

// ReclaimSpot terminates a spot instance as EC2 does when it takes the
// capacity back.
func (s *Server) ReclaimSpot(id string) {
	s.stopOutside(id, "Server.SpotInstanceTermination", "Server.SpotInstanceTermination: Spot instance termination")
}

func (s *Server) stopOutside(id, code, message string) {
	s.locked(func() {
		for _, in := range s.instances {
			if in.ID == id && (in.State == "pending" || in.State == "running") {
				in.State, in.changedAt = "shutting-down", s.now()
				in.StateReason, in.reasonMessage = code, message
			}
		}
	})
}

// Instances returns the ledger: every instance ever launched, in launch
// order, with its current state.
func (s *Server) Instances() []Instance {
	var out []Instance
	s.locked(func() {
		for _, in := range s.instances {
			out = append(out, in.snapshot())
		}
	})
	return out
}

func (in *instance) snapshot() Instance {
	c := in.Instance
	c.Tags = maps.Clone(in.Tags)
	c.SecurityGroups = slices.Clone(in.SecurityGroups)
	c.SecurityGroupIDs = slices.Clone(in.SecurityGroupIDs)
	c.BlockDevices = slices.Clone(in.BlockDevices)
	return c
}

// Calls returns how many requests for action the fake has answered,
// failures included.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// AccessKeyIDs returns the access key ids the requests were signed with, sorted.
func (s *Server) AccessKeyIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.accessKeys))
}

// AssertNoneRunning fails t for every launched instance that is not yet
// terminated: what a test leaves running would be billed on EC2.
func (s *Server) AssertNoneRunning(t testing.TB) {
	t.Helper()
	for _, in := range s.Instances() {
		if in.State != "terminated" {
			t.Errorf("ec2test: instance %s (tags %v) is still %s", in.ID, in.Tags, in.State)
		}
	}
}

var credentialRE = regexp.MustCompile(`Credential=([^/,\s]+)/`)

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	requestID := fmt.Sprintf("%08x-0000-4000-8000-%012x", s.requests, s.requests)
	s.mu.Unlock()
	if r.Method != http.MethodPost {
		writeError(w, fail("InvalidHttpRequest", "The EC2 Query API takes POST requests"), requestID)
		return
	}
	m := credentialRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		writeError(w, fail("AuthFailure", "AWS was not able to validate the provided access credentials"), requestID)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, fail("InvalidParameterValue", err.Error()), requestID)
		return
	}
	p := params(r.PostForm)
	action := p.get("Action")
	resp, ev, apiErr := s.handle(action, m[1], p)
	s.tell(ev)
	if s.loseAnswer(action) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	if apiErr != nil {
		writeError(w, apiErr, requestID)
		return
	}
	writeXML(w, http.StatusOK, envelope{
		XMLName:   xml.Name{Space: Namespace, Local: action + "Response"},
		RequestID: requestID,
		Body:      bodyOf(resp),
	})
}

func (s *Server) loseAnswer(action string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lose[action] == 0 {
		return false
	}
	s.lose[action]--
	return true
}

// handle answers one request under the lock, and returns the state
// changes on the way.
func (s *Server) handle(action, accessKey string, p params) (any, events, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[action]++
	s.accessKeys[accessKey] = true
	ev := s.settle()
	if codes := s.failures[action]; len(codes) > 0 {
		s.failures[action] = codes[1:]
		return nil, ev, fail(codes[0], "injected by ec2test")
	}
	h, ok := actions[action]
	if !ok {
		return nil, ev, fail("InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", action))
	}
	resp, err := h(s, p)
	return resp, ev, err
}

var actions = map[string]func(*Server, params) (any, *apiError){
	"RunInstances":           (*Server).runInstances,
	"DescribeInstances":      (*Server).describeInstances,
	"TerminateInstances":     (*Server).terminateInstances,
	"DescribeImages":         (*Server).describeImages,
	"DescribeKeyPairs":       (*Server).describeKeyPairs,
	"CreateKeyPair":          (*Server).createKeyPair,
	"DescribeSecurityGroups": (*Server).describeSecurityGroups,
	"CreateSecurityGroup":    (*Server).createSecurityGroup,
	"DescribeAddresses":      (*Server).describeAddresses,
	"AssociateAddress":       (*Server).associateAddress,
	"DisassociateAddress":    (*Server).disassociateAddress,
}

// decodeUserData decodes RunInstances' base64 user data.
func decodeUserData(v string) (string, *apiError) {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return "", fail("InvalidParameterValue", "Invalid BASE64 encoding of user data.")
	}
	if len(b) > 16*1024 {
		return "", fail("InvalidParameterValue", "User data is limited to 16384 bytes")
	}
	return string(b), nil
}

func notFound(code, what, id string) *apiError {
	return fail(code, fmt.Sprintf("The %s '%s' does not exist", what, id))
}

func hasPrefixID(id, prefix string) bool {
	return strings.HasPrefix(id, prefix+"-") && len(id) > len(prefix)+1
}
