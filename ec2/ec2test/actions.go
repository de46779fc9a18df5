package ec2test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The handlers below run with s.mu held and the instances settled.

var stateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

func (s *Server) runInstances(p params) (any, *apiError) {
	if token := p.get("ClientToken"); token != "" {
		if rid, ok := s.byToken[token]; ok { // an idempotent retry: the same reservation again
			return s.reservation(rid, nil), nil
		}
	}
	imageID := p.get("ImageId")
	switch img, ok := s.images[imageID]; {
	case imageID == "":
		return nil, fail("MissingParameter", "The request must contain the parameter ImageId")
	case !hasPrefixID(imageID, "ami"):
		return nil, fail("InvalidAMIID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"ami-...\")", imageID))
	case !ok:
		return nil, notFound("InvalidAMIID.NotFound", "image id", "["+imageID+"]")
	case img.State != "available":
		return nil, fail("InvalidAMIID.Unavailable", fmt.Sprintf("The image id '[%s]' is no longer available", imageID))
	}
	if p.get("InstanceType") == "" {
		return nil, fail("MissingParameter", "The request must contain the parameter InstanceType")
	}
	maxCount, err1 := strconv.Atoi(p.get("MaxCount"))
	minCount, err2 := strconv.Atoi(p.get("MinCount"))
	if err1 != nil || err2 != nil || minCount < 1 || maxCount < minCount {
		return nil, fail("InvalidParameterValue", "MinCount and MaxCount must be positive, MinCount <= MaxCount")
	}
	if k := p.get("KeyName"); k != "" {
		if _, ok := s.keyPairs[k]; !ok {
			return nil, notFound("InvalidKeyPair.NotFound", "key pair", k)
		}
	}
	names := p.list("SecurityGroup")
	for _, n := range names {
		if _, ok := s.groups[n]; !ok {
			return nil, notFound("InvalidGroup.NotFound", "security group", n)
		}
	}
	ids := p.list("SecurityGroupId")
	for _, id := range ids {
		if _, ok := s.groupByID(id); !ok {
			return nil, notFound("InvalidGroup.NotFound", "security group", id)
		}
	}
	if len(names) > 0 && p.get("SubnetId") != "" {
		return nil, fail("InvalidParameterCombination", "The parameter groupName cannot be used with the parameter subnet")
	}
	userData, apiErr := decodeUserData(p.get("UserData"))
	if apiErr != nil {
		return nil, apiErr
	}
	tags, apiErr := p.instanceTags()
	if apiErr != nil {
		return nil, apiErr
	}
	spot := p.get("InstanceMarketOptions.MarketType") == "spot"
	if spot && s.spotRefusal != "" {
		return nil, fail(s.spotRefusal, "There is no Spot capacity available that matches your request.")
	}
	var devices []string
	for i := 1; i <= p.count("BlockDeviceMapping", "DeviceName"); i++ {
		devices = append(devices, p.get(fmt.Sprintf("BlockDeviceMapping.%d.DeviceName", i)))
	}
	profile := p.get("IamInstanceProfile.Name")
	if profile == "" {
		profile = p.get("IamInstanceProfile.Arn")
	}
	rid := s.newID("r")
	now := s.now()
	for range maxCount {
		s.instances = append(s.instances, &instance{
			Instance: Instance{
				ID: s.newID("i"), ImageID: imageID, InstanceType: p.get("InstanceType"), KeyName: p.get("KeyName"),
				SecurityGroups: names, SecurityGroupIDs: ids, SubnetID: p.get("SubnetId"), InstanceProfile: profile,
				BlockDevices: devices, Tags: tags, UserData: userData,
				Spot: spot, SpotMaxPrice: p.get("InstanceMarketOptions.SpotOptions.MaxPrice"),
				ClientToken: p.get("ClientToken"), State: "pending", LaunchTime: now,
			},
			reservationID: rid,
			changedAt:     now,
		})
	}
	if token := p.get("ClientToken"); token != "" {
		s.byToken[token] = rid
	}
	return s.reservation(rid, nil), nil
}

// reservation renders the instances of reservation rid that keep says to keep (all if keep is nil).
func (s *Server) reservation(rid string, keep func(*instance) bool) reservationXML {
	r := reservationXML{ReservationID: rid, OwnerID: s.opts.OwnerID}
	for _, in := range s.instances {
		if in.reservationID == rid && (keep == nil || keep(in)) {
			r.Instances = append(r.Instances, s.instanceXML(in))
		}
	}
	return r
}

func (s *Server) instanceXML(in *instance) instanceXML {
	x := instanceXML{
		InstanceID: in.ID, ImageID: in.ImageID, KeyName: in.KeyName, InstanceType: in.InstanceType,
		State:      stateXML{Code: stateCodes[in.State], Name: in.State},
		LaunchTime: in.LaunchTime.UTC().Format(time.RFC3339), SubnetID: in.SubnetID, IPAddress: in.PublicIP,
		RootDeviceType: "ebs", ClientToken: in.ClientToken,
	}
	if in.State == "running" {
		x.PrivateDNSName = "ip-10-0-0-1.ec2.internal"
	}
	for _, n := range in.SecurityGroups {
		x.Groups = append(x.Groups, groupXML{GroupID: s.groups[n].GroupID, GroupName: n})
	}
	for _, id := range in.SecurityGroupIDs {
		x.Groups = append(x.Groups, groupXML{GroupID: id})
	}
	if in.StateReason != "" {
		x.StateReason = &reasonXML{Code: in.StateReason, Message: in.reasonMessage}
		x.Reason = in.reasonMessage
	}
	for _, d := range in.BlockDevices {
		x.BlockDevices = append(x.BlockDevices, deviceXML{DeviceName: d})
	}
	if in.Spot {
		x.InstanceLifecycle = "spot"
	}
	for _, k := range slices.Sorted(maps.Keys(in.Tags)) {
		x.Tags = append(x.Tags, tagXML{Key: k, Value: in.Tags[k]})
	}
	if in.InstanceProfile != "" {
		x.IamInstanceProfile = &profileXML{Arn: in.InstanceProfile, ID: "AIPAFAKE"}
	}
	return x
}

// instanceFilters are the DescribeInstances filters the fake knows, besides tag:KEY.
var instanceFilters = map[string]func(*instance) []string{
	"instance-id":         func(in *instance) []string { return []string{in.ID} },
	"instance-state-name": func(in *instance) []string { return []string{in.State} },
	"image-id":            func(in *instance) []string { return []string{in.ImageID} },
	"tag-key":             func(in *instance) []string { return slices.Collect(maps.Keys(in.Tags)) },
	"client-token":        func(in *instance) []string { return []string{in.ClientToken} },
}

// imageFilters are the DescribeImages filters the fake knows.
var imageFilters = map[string]func(Image) string{
	"state":             func(img Image) string { return img.State },
	"owner-id":          func(img Image) string { return img.Owner },
	"image-id":          func(img Image) string { return img.ID },
	"manifest-location": func(img Image) string { return img.Location },
}

// checkFilters refuses filter names the fake does not know, as EC2 does.
func checkFilters[F any](filters map[string][]string, known map[string]F, tags bool) *apiError {
	for name := range filters {
		if _, ok := known[name]; !ok && !(tags && strings.HasPrefix(name, "tag:")) {
			return fail("InvalidParameterValue", fmt.Sprintf("The filter '%s' is invalid", name))
		}
	}
	return nil
}

// matchInstance applies DescribeInstances' filters: every filter must
// match one of its values.
func matchInstance(in *instance, filters map[string][]string) bool {
	for name, values := range filters {
		var got []string
		if key, ok := strings.CutPrefix(name, "tag:"); ok {
			if v, ok := in.Tags[key]; ok {
				got = []string{v}
			}
		} else {
			got = instanceFilters[name](in)
		}
		if !slices.ContainsFunc(got, func(g string) bool { return slices.Contains(values, g) }) {
			return false
		}
	}
	return true
}

func (s *Server) describeInstances(p params) (any, *apiError) {
	ids := p.list("InstanceId")
	if len(ids) > 0 && p.has("MaxResults") {
		return nil, fail("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	for _, id := range ids {
		if s.visible(id) == nil {
			return nil, notFound("InvalidInstanceID.NotFound", "instance ID", id)
		}
	}
	filters := p.filters()
	if err := checkFilters(filters, instanceFilters, true); err != nil {
		return nil, err
	}
	var match []*instance
	for _, in := range s.instances {
		if !in.Vanished && (len(ids) == 0 || slices.Contains(ids, in.ID)) && matchInstance(in, filters) {
			match = append(match, in)
		}
	}
	start, end, next, apiErr := page(p, len(match))
	if apiErr != nil {
		return nil, apiErr
	}
	resp := &describeInstancesResponse{NextToken: next}
	var order []string
	page := map[string]bool{}
	for _, in := range match[start:end] {
		if !slices.Contains(order, in.reservationID) {
			order = append(order, in.reservationID)
		}
		page[in.ID] = true
	}
	for _, rid := range order {
		resp.Reservations = append(resp.Reservations, s.reservation(rid, func(in *instance) bool { return page[in.ID] }))
	}
	return resp, nil
}

// page applies MaxResults (5 to 1000) and NextToken to n results.
func page(p params, n int) (start, end int, next string, err *apiError) {
	if t := p.get("NextToken"); t != "" {
		var convErr error
		if start, convErr = strconv.Atoi(t); convErr != nil || start < 0 || start > n {
			return 0, 0, "", fail("InvalidParameterValue", "The token '"+t+"' is invalid")
		}
	}
	end = n
	if v := p.get("MaxResults"); v != "" {
		max, convErr := strconv.Atoi(v)
		if convErr != nil || max < 5 || max > 1000 {
			return 0, 0, "", fail("InvalidParameterValue", "MaxResults must be between 5 and 1000")
		}
		if start+max < n {
			end, next = start+max, strconv.Itoa(start+max)
		}
	}
	return start, end, next, nil
}

// visible returns the instance with id unless it does not exist or has vanished.
func (s *Server) visible(id string) *instance {
	for _, in := range s.instances {
		if in.ID == id && !in.Vanished {
			return in
		}
	}
	return nil
}

func (s *Server) terminateInstances(p params) (any, *apiError) {
	ids := p.list("InstanceId")
	if len(ids) == 0 {
		return nil, fail("MissingParameter", "The request must contain the parameter InstanceId")
	}
	for _, id := range ids {
		if !hasPrefixID(id, "i") {
			return nil, fail("InvalidInstanceID.Malformed", fmt.Sprintf("Invalid id: \"%s\"", id))
		}
		if s.visible(id) == nil {
			return nil, notFound("InvalidInstanceID.NotFound", "instance ID", id)
		}
	}
	resp := &terminateInstancesResponse{}
	for _, id := range ids {
		in := s.visible(id)
		prev := in.State
		if prev == "pending" || prev == "running" {
			in.State, in.changedAt = "shutting-down", s.now()
			in.StateReason, in.reasonMessage = "Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown"
		}
		resp.Instances = append(resp.Instances, stateChangeXML{
			InstanceID:    id,
			CurrentState:  stateXML{Code: stateCodes[in.State], Name: in.State},
			PreviousState: stateXML{Code: stateCodes[prev], Name: prev},
		})
	}
	return resp, nil
}

func (s *Server) describeImages(p params) (any, *apiError) {
	owners := p.list("Owner")
	for i, o := range owners {
		if o == "self" {
			owners[i] = s.opts.OwnerID
		}
	}
	ids := p.list("ImageId")
	for _, id := range ids {
		if _, ok := s.images[id]; !ok {
			return nil, notFound("InvalidAMIID.NotFound", "image id", "["+id+"]")
		}
	}
	filters := p.filters()
	if err := checkFilters(filters, imageFilters, false); err != nil {
		return nil, err
	}
	resp := &describeImagesResponse{}
	for _, id := range slices.Sorted(maps.Keys(s.images)) {
		img := s.images[id]
		if len(owners) > 0 && !slices.Contains(owners, img.Owner) || len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		ok := true
		for name, values := range filters {
			ok = ok && slices.Contains(values, imageFilters[name](img))
		}
		if ok {
			resp.Images = append(resp.Images, imageXML{
				ImageID: id, ImageLocation: img.Location, ImageState: img.State, ImageOwnerID: img.Owner,
				IsPublic: img.Owner != s.opts.OwnerID, Architecture: "x86_64", ImageType: "machine",
				Name: id, RootDeviceType: "ebs",
			})
		}
	}
	return resp, nil
}

func (s *Server) describeKeyPairs(p params) (any, *apiError) {
	names := p.list("KeyName")
	resp := &describeKeyPairsResponse{}
	for _, n := range names {
		k, ok := s.keyPairs[n]
		if !ok {
			return nil, notFound("InvalidKeyPair.NotFound", "key pair", n)
		}
		resp.KeyPairs = append(resp.KeyPairs, k)
	}
	if len(names) == 0 {
		for _, n := range slices.Sorted(maps.Keys(s.keyPairs)) {
			resp.KeyPairs = append(resp.KeyPairs, s.keyPairs[n])
		}
	}
	return resp, nil
}

func (s *Server) createKeyPair(p params) (any, *apiError) {
	name := p.get("KeyName")
	if name == "" {
		return nil, fail("MissingParameter", "The request must contain the parameter KeyName")
	}
	if _, ok := s.keyPairs[name]; ok {
		return nil, fail("InvalidKeyPair.Duplicate", fmt.Sprintf("The keypair '%s' already exists.", name))
	}
	k := s.addKeyPair(name)
	return &createKeyPairResponse{
		KeyPairID: k.KeyPairID, KeyName: k.KeyName, KeyFingerprint: k.KeyFingerprint,
		KeyMaterial: "-----BEGIN RSA PRIVATE KEY-----\nZmFrZSBrZXkgZnJvbSBlYzJ0ZXN0\n-----END RSA PRIVATE KEY-----",
	}, nil
}

func (s *Server) describeSecurityGroups(p params) (any, *apiError) {
	resp := &describeSecurityGroupsResponse{}
	names, ids := p.list("GroupName"), p.list("GroupId")
	for _, n := range names {
		g, ok := s.groups[n]
		if !ok {
			return nil, notFound("InvalidGroup.NotFound", "security group", n)
		}
		resp.Groups = append(resp.Groups, g)
	}
	for _, id := range ids {
		g, ok := s.groupByID(id)
		if !ok {
			return nil, notFound("InvalidGroup.NotFound", "security group", id)
		}
		resp.Groups = append(resp.Groups, g)
	}
	if len(names)+len(ids) == 0 {
		for _, n := range slices.Sorted(maps.Keys(s.groups)) {
			resp.Groups = append(resp.Groups, s.groups[n])
		}
	}
	return resp, nil
}

func (s *Server) groupByID(id string) (securityGroupXML, bool) {
	for _, g := range s.groups {
		if g.GroupID == id {
			return g, true
		}
	}
	return securityGroupXML{}, false
}

func (s *Server) createSecurityGroup(p params) (any, *apiError) {
	name, description := p.get("GroupName"), p.get("GroupDescription")
	switch {
	case name == "":
		return nil, fail("MissingParameter", "The request must contain the parameter GroupName")
	case description == "":
		return nil, fail("MissingParameter", "The request must contain the parameter GroupDescription")
	}
	if _, ok := s.groups[name]; ok {
		return nil, fail("InvalidGroup.Duplicate", fmt.Sprintf("The security group '%s' already exists", name))
	}
	return &createSecurityGroupResponse{Return: true, GroupID: s.addSecurityGroup(name, description).GroupID}, nil
}

func addressXMLOf(a *Address) addressXML {
	return addressXML{PublicIP: a.PublicIP, AllocationID: a.AllocationID, Domain: "vpc", InstanceID: a.InstanceID, AssociationID: a.AssociationID}
}

func (s *Server) describeAddresses(p params) (any, *apiError) {
	resp := &describeAddressesResponse{}
	ips, allocs := p.list("PublicIp"), p.list("AllocationId")
	for _, ip := range ips {
		a, ok := s.addresses[ip]
		if !ok {
			return nil, fail("InvalidAddress.NotFound", fmt.Sprintf("Address '%s' not found.", ip))
		}
		resp.Addresses = append(resp.Addresses, addressXMLOf(a))
	}
	for _, id := range allocs {
		a := s.addressByAllocation(id)
		if a == nil {
			return nil, fail("InvalidAllocationID.NotFound", fmt.Sprintf("Allocation ID '%s' not found.", id))
		}
		resp.Addresses = append(resp.Addresses, addressXMLOf(a))
	}
	if len(ips)+len(allocs) == 0 {
		for _, ip := range slices.Sorted(maps.Keys(s.addresses)) {
			resp.Addresses = append(resp.Addresses, addressXMLOf(s.addresses[ip]))
		}
	}
	return resp, nil
}

func (s *Server) addressByAllocation(id string) *Address {
	for _, a := range s.addresses {
		if a.AllocationID == id {
			return a
		}
	}
	return nil
}

func (s *Server) associateAddress(p params) (any, *apiError) {
	var a *Address
	if id := p.get("AllocationId"); id != "" {
		if a = s.addressByAllocation(id); a == nil {
			return nil, fail("InvalidAllocationID.NotFound", fmt.Sprintf("Allocation ID '%s' not found.", id))
		}
	} else if a = s.addresses[p.get("PublicIp")]; a == nil {
		return nil, fail("InvalidAddress.NotFound", fmt.Sprintf("Address '%s' not found.", p.get("PublicIp")))
	}
	id := p.get("InstanceId")
	in := s.visible(id)
	switch {
	case in == nil:
		return nil, notFound("InvalidInstanceID.NotFound", "instance ID", id)
	case in.State != "running":
		return nil, fail("IncorrectInstanceState", fmt.Sprintf("The instance '%s' is not in a valid state for this operation.", id))
	case a.InstanceID != "" && a.InstanceID != id && p.get("AllowReassociation") != "true":
		return nil, fail("Resource.AlreadyAssociated", fmt.Sprintf("resource %s is already associated with associate-id %s", a.AllocationID, a.AssociationID))
	}
	if a.InstanceID != "" {
		if prev := s.visible(a.InstanceID); prev != nil {
			prev.PublicIP = ""
		}
	}
	a.InstanceID, a.AssociationID = id, s.newID("eipassoc")
	in.PublicIP = a.PublicIP
	return &associateAddressResponse{Return: true, AssociationID: a.AssociationID}, nil
}

func (s *Server) disassociateAddress(p params) (any, *apiError) {
	var a *Address
	if id := p.get("AssociationId"); id != "" {
		for _, c := range s.addresses {
			if c.AssociationID == id {
				a = c
			}
		}
		if a == nil {
			return nil, fail("InvalidAssociationID.NotFound", fmt.Sprintf("The association ID '%s' does not exist", id))
		}
	} else if a = s.addresses[p.get("PublicIp")]; a == nil {
		return nil, fail("InvalidAddress.NotFound", fmt.Sprintf("Address '%s' not found.", p.get("PublicIp")))
	}
	if in := s.visible(a.InstanceID); in != nil {
		in.PublicIP = ""
	}
	a.InstanceID, a.AssociationID = "", ""
	return &returnResponse{Return: true}, nil
}
