package ec2

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"text/template"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/buildslave/buildslave/latent"
)

// maxUserData is EC2's limit on user data before base64 encoding.
const maxUserData = 16 * 1024

// GoneError says why an instance is no longer there: Check's answer for
// an instance terminated from outside, reclaimed by spot, or vanished.
type GoneError struct {
	InstanceID string
	// State is the instance's state (terminated, shutting-down, stopped,
	// …), or "" if EC2 no longer knows it.
	State string
	// Reason is EC2's state reason, e.g. "Server.SpotInstanceTermination:
	// Spot instance termination".
	Reason string
}

func (e *GoneError) Error() string {
	switch {
	case e.State == "":
		return fmt.Sprintf("ec2: instance %s vanished", e.InstanceID)
	case e.Reason == "":
		return fmt.Sprintf("ec2: instance %s is %s", e.InstanceID, e.State)
	}
	return fmt.Sprintf("ec2: instance %s is %s: %s", e.InstanceID, e.State, e.Reason)
}

func gone(id string, o observation) *GoneError {
	return &GoneError{InstanceID: id, State: string(o.state), Reason: o.reason}
}

// errorCode is the EC2 error code of err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// spotRefusals are the answers on which a spot start falls back to on-demand.
var spotRefusals = []string{"InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded", "InsufficientCapacity"}

// Start starts one instance for req: it makes the key pair and the
// security group if they are missing, picks the image, launches the
// instance tagged with req.MasterID and the slave's name, waits (at most
// missing_timeout) until it runs, and associates the elastic IP. On any
// error the instance is terminated before Start returns.
func (s *Slave) Start(ctx context.Context, req latent.StartRequest) (latent.Instance, error) {
	switch {
	case s.client.open() != nil:
		return latent.Instance{}, ErrClosed
	case req.MasterID == "":
		return latent.Instance{}, errors.New("ec2: StartRequest.MasterID is empty: instances must carry the master's tag")
	case req.Name != s.slave.Name():
		return latent.Instance{}, fmt.Errorf("ec2: StartRequest.Name %q is not this slave's name %q", req.Name, s.slave.Name())
	}
	if err := s.ensureKeyPair(ctx); err != nil {
		return latent.Instance{}, err
	}
	if err := s.ensureSecurityGroup(ctx); err != nil {
		return latent.Instance{}, err
	}
	ami, err := s.image(ctx)
	if err != nil {
		return latent.Instance{}, err
	}
	in, err := s.runInput(ami, req)
	if err != nil {
		return latent.Instance{}, err
	}
	began := time.Now()
	inst, err := s.launch(ctx, in, req)
	if err != nil {
		return latent.Instance{}, err
	}
	s.log.Info("ec2: instance launched", "instance", inst.ID, "ami", ami, "type", s.instanceType, "spot", in.InstanceMarketOptions != nil)
	if err := s.running(ctx, inst, began); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.settings.stopTimeout)
		defer cancel()
		return latent.Instance{}, errors.Join(err, s.Stop(stopCtx, inst))
	}
	return inst, nil
}

// launch runs the instance, falling back from spot to on-demand. Each
// attempt has its own client token, so that the SDK's retries of it never
// start a second instance. When EC2's answer is lost (the SDK gave up, ctx
// ended) the instance may exist all the same: launch finds it by its
// token and terminates it.
func (s *Slave) launch(ctx context.Context, in *awsec2.RunInstancesInput, req latent.StartRequest) (latent.Instance, error) {
	in.ClientToken = aws.String(rand.Text())
	out, err := s.client.api.RunInstances(ctx, in)
	if code := errorCode(err); in.InstanceMarketOptions != nil && slices.Contains(spotRefusals, code) {
		s.log.Warn("ec2: spot capacity refused; starting an on-demand instance", "code", code)
		in.InstanceMarketOptions, in.ClientToken = nil, aws.String(rand.Text())
		out, err = s.client.api.RunInstances(ctx, in)
	}
	if err != nil && errorCode(err) == "" {
		err = errors.Join(err, s.terminateByToken(ctx, req.MasterID, aws.ToString(in.ClientToken)))
	}
	if err != nil {
		return latent.Instance{}, fmt.Errorf("ec2: run instance: %w", err)
	}
	if len(out.Instances) != 1 {
		return latent.Instance{}, fmt.Errorf("ec2: run instance: EC2 started %d instances", len(out.Instances))
	}
	inst := latent.Instance{
		ID:       aws.ToString(out.Instances[0].InstanceId),
		Slave:    req.Name,
		MasterID: req.MasterID,
		Started:  aws.ToTime(out.Instances[0].LaunchTime),
	}
	if inst.Started.IsZero() {
		inst.Started = time.Now()
	}
	return inst, nil
}

// terminateByToken stops the instances a RunInstances with this client
// token started, if any.
func (s *Slave) terminateByToken(ctx context.Context, masterID, token string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.settings.stopTimeout)
	defer cancel()
	var found []latent.Instance
	err := eachInstance(ctx, s.client.api, []types.Filter{{Name: aws.String("client-token"), Values: []string{token}}}, func(in types.Instance) {
		found = append(found, latent.Instance{ID: aws.ToString(in.InstanceId), Slave: s.slave.Name(), MasterID: masterID})
	})
	errs := []error{err}
	for _, inst := range found {
		s.log.Warn("ec2: terminating an instance whose launch answer was lost", "instance", inst.ID)
		errs = append(errs, s.Stop(ctx, inst))
	}
	return errors.Join(errs...)
}

// running waits until inst runs, at most missing_timeout, then associates
// the elastic IP.
func (s *Slave) running(ctx context.Context, inst latent.Instance, began time.Time) error {
	wctx, cancel := context.WithTimeout(ctx, s.slave.MissingTimeout())
	defer cancel()
	o, err := s.client.poller.wait(wctx, inst.ID, inst.MasterID, untilRunning)
	switch {
	case err != nil:
		return fmt.Errorf("ec2: waiting for instance %s to run: %w", inst.ID, err)
	case o.state != types.InstanceStateNameRunning:
		return fmt.Errorf("ec2: instance %s did not start: %w", inst.ID, gone(inst.ID, o))
	}
	s.log.Info("ec2: instance running", "instance", inst.ID, "after", time.Since(began).Round(time.Millisecond))
	if s.settings.elasticIP == "" {
		return nil
	}
	addr, err := s.address(ctx)
	if err != nil {
		return err
	}
	_, err = s.client.api.AssociateAddress(ctx, &awsec2.AssociateAddressInput{
		InstanceId: aws.String(inst.ID), AllocationId: addr.AllocationId, PublicIp: publicIPIfNoAllocation(addr),
	})
	if err != nil {
		return fmt.Errorf("ec2: associate elastic IP %s with %s: %w", s.settings.elasticIP, inst.ID, err)
	}
	s.log.Info("ec2: elastic IP associated", "instance", inst.ID, "ip", s.settings.elasticIP)
	return nil
}

// publicIPIfNoAllocation names an EC2-Classic address by its IP; a VPC
// address goes by its allocation or association id.
func publicIPIfNoAllocation(a types.Address) *string {
	if a.AllocationId != nil {
		return nil
	}
	return a.PublicIp
}

func (s *Slave) address(ctx context.Context) (types.Address, error) {
	out, err := s.client.api.DescribeAddresses(ctx, &awsec2.DescribeAddressesInput{PublicIps: []string{s.settings.elasticIP}})
	if err == nil && len(out.Addresses) == 0 {
		err = errors.New("not allocated to this account")
	}
	if err != nil {
		return types.Address{}, fmt.Errorf("ec2: elastic IP %s: %w", s.settings.elasticIP, err)
	}
	return out.Addresses[0], nil
}

// Stop disassociates the elastic IP (if this instance holds it),
// terminates the instance and waits, at most StopTimeout, until it is
// terminated. An instance already gone is not an error.
func (s *Slave) Stop(ctx context.Context, inst latent.Instance) error {
	if err := s.ready(inst); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.settings.stopTimeout)
	defer cancel()
	var errs []error
	if s.settings.elasticIP != "" {
		errs = append(errs, s.disassociate(ctx, inst.ID))
	}
	_, err := s.client.api.TerminateInstances(ctx, &awsec2.TerminateInstancesInput{InstanceIds: []string{inst.ID}})
	if errorCode(err) == "InvalidInstanceID.NotFound" {
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("ec2: terminate %s: %w", inst.ID, err))...)
	}
	if _, err := s.client.poller.wait(ctx, inst.ID, inst.MasterID, untilTerminated); err != nil {
		return errors.Join(append(errs, fmt.Errorf("ec2: waiting for %s to terminate: %w", inst.ID, err))...)
	}
	s.log.Info("ec2: instance terminated", "instance", inst.ID)
	return errors.Join(errs...)
}

func (s *Slave) disassociate(ctx context.Context, id string) error {
	addr, err := s.address(ctx)
	if err != nil || aws.ToString(addr.InstanceId) != id {
		return err
	}
	in := &awsec2.DisassociateAddressInput{AssociationId: addr.AssociationId}
	if in.AssociationId == nil {
		in.PublicIp = addr.PublicIp
	}
	if _, err := s.client.api.DisassociateAddress(ctx, in); err != nil {
		return fmt.Errorf("ec2: disassociate elastic IP %s from %s: %w", s.settings.elasticIP, id, err)
	}
	s.log.Info("ec2: elastic IP disassociated", "instance", id, "ip", s.settings.elasticIP)
	return nil
}

// ready refuses a closed Client, and an instance without its master's id:
// the poller finds instances by that tag.
func (s *Slave) ready(inst latent.Instance) error {
	if err := s.client.open(); err != nil {
		return err
	}
	if inst.MasterID == "" {
		return fmt.Errorf("ec2: instance %s has no MasterID", inst.ID)
	}
	return nil
}

// Check returns nil while inst is pending or running, and a *GoneError
// once it has stopped, terminated or vanished. It answers after the next
// poll, which it shares with every other waiter of the region.
func (s *Slave) Check(ctx context.Context, inst latent.Instance) error {
	if err := s.ready(inst); err != nil {
		return err
	}
	o, err := s.client.poller.wait(ctx, inst.ID, inst.MasterID, anyObservation)
	switch {
	case err != nil:
		return err
	case o.found && (o.state == types.InstanceStateNamePending || o.state == types.InstanceStateNameRunning):
		return nil
	}
	return gone(inst.ID, o)
}

// List returns every instance tagged with masterID that is not yet
// terminated, of any slave; instances of other masters are never listed.
func (s *Slave) List(ctx context.Context, masterID string) ([]latent.Instance, error) {
	if err := s.client.open(); err != nil {
		return nil, err
	}
	if masterID == "" {
		return nil, errors.New("ec2: List needs a master id")
	}
	var list []latent.Instance
	err := eachInstance(ctx, s.client.api, []types.Filter{
		{Name: aws.String("tag:" + MasterTag), Values: []string{masterID}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "shutting-down", "stopping", "stopped"}},
	}, func(in types.Instance) {
		inst := latent.Instance{ID: aws.ToString(in.InstanceId), MasterID: masterID, Started: aws.ToTime(in.LaunchTime)}
		for _, t := range in.Tags {
			if aws.ToString(t.Key) == SlaveTag {
				inst.Slave = aws.ToString(t.Value)
			}
		}
		list = append(list, inst)
	})
	if err != nil {
		return nil, fmt.Errorf("ec2: list instances of %s: %w", masterID, err)
	}
	return list, nil
}

// runInput is the RunInstances request for one instance of this slave.
func (s *Slave) runInput(ami string, req latent.StartRequest) (*awsec2.RunInstancesInput, error) {
	st := s.settings
	tags := []types.Tag{
		{Key: aws.String(MasterTag), Value: aws.String(req.MasterID)},
		{Key: aws.String(SlaveTag), Value: aws.String(req.Name)},
	}
	for _, k := range slices.Sorted(maps.Keys(st.tags)) {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(st.tags[k])})
	}
	in := &awsec2.RunInstancesInput{
		ImageId:           aws.String(ami),
		InstanceType:      types.InstanceType(s.instanceType),
		MinCount:          aws.Int32(1),
		MaxCount:          aws.Int32(1),
		KeyName:           aws.String(st.keypairName),
		SecurityGroupIds:  st.securityGroupIDs,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tags}},
		// An instance that shuts itself down is gone, not stopped and billed for its disks.
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		BlockDeviceMappings:               st.blockDeviceMappings,
	}
	if s.groupName != "" {
		in.SecurityGroups = []string{s.groupName}
	}
	if st.subnetID != "" {
		in.SubnetId = aws.String(st.subnetID)
	}
	if st.instanceProfile != "" {
		in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Name: aws.String(st.instanceProfile)}
		if arn.IsARN(st.instanceProfile) {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: aws.String(st.instanceProfile)}
		}
	}
	if s.userData != nil {
		data, err := renderUserData(s.userData, UserDataVars{Master: st.masterAddress, Name: req.Name, Password: req.Password, MasterID: req.MasterID})
		if err != nil {
			return nil, fmt.Errorf("ec2: user_data: %w", err)
		}
		in.UserData = aws.String(base64.StdEncoding.EncodeToString([]byte(data)))
	}
	if st.spot {
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{
			MarketType: types.MarketTypeSpot,
			SpotOptions: &types.SpotMarketOptions{
				MaxPrice:                     aws.String(formatPrice(st.maxSpotPrice)),
				SpotInstanceType:             types.SpotInstanceTypeOneTime,
				InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate,
			},
		}
	}
	return in, nil
}

func renderUserData(t *template.Template, vars UserDataVars) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, vars); err != nil {
		return "", err
	}
	if b.Len() > maxUserData {
		return "", fmt.Errorf("rendered user data has %d bytes, EC2 takes at most %d", b.Len(), maxUserData)
	}
	return b.String(), nil
}

// ensureKeyPair makes the key pair keypair_name if it does not exist. Its
// private key is discarded, as Buildbot does: the master never logs in.
func (s *Slave) ensureKeyPair(ctx context.Context) error {
	name := s.settings.keypairName
	return s.client.once(ctx, "keypair "+name, func(ctx context.Context) error {
		_, err := s.client.api.DescribeKeyPairs(ctx, &awsec2.DescribeKeyPairsInput{KeyNames: []string{name}})
		if errorCode(err) != "InvalidKeyPair.NotFound" {
			return wrapf(err, "ec2: key pair %s", name)
		}
		_, err = s.client.api.CreateKeyPair(ctx, &awsec2.CreateKeyPairInput{KeyName: aws.String(name)})
		if err == nil {
			s.log.Info("ec2: created key pair", "keypair_name", name)
		}
		if errorCode(err) == "InvalidKeyPair.Duplicate" {
			return nil
		}
		return wrapf(err, "ec2: create key pair %s", name)
	})
}

// ensureSecurityGroup makes the security group security_name if it does
// not exist (not in a VPC, where security_group_ids are used).
func (s *Slave) ensureSecurityGroup(ctx context.Context) error {
	name := s.groupName
	if name == "" {
		return nil
	}
	return s.client.once(ctx, "group "+name, func(ctx context.Context) error {
		_, err := s.client.api.DescribeSecurityGroups(ctx, &awsec2.DescribeSecurityGroupsInput{GroupNames: []string{name}})
		if errorCode(err) != "InvalidGroup.NotFound" {
			return wrapf(err, "ec2: security group %s", name)
		}
		_, err = s.client.api.CreateSecurityGroup(ctx, &awsec2.CreateSecurityGroupInput{
			GroupName:   aws.String(name),
			Description: aws.String("Authorization to access the buildbot instance."),
		})
		if err == nil {
			s.log.Info("ec2: created security group", "security_name", name)
		}
		if errorCode(err) == "InvalidGroup.Duplicate" {
			return nil
		}
		return wrapf(err, "ec2: create security group %s", name)
	})
}

// wrapf prefixes a non-nil err.
func wrapf(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
