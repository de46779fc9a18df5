package ec2test

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"strings"
)

// Namespace is the XML namespace of the EC2 API version the fake speaks.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// envelope is a successful response: the root element ActionResponse in
// the EC2 namespace, the request id, then the action's own elements.
type envelope struct {
	XMLName   xml.Name
	RequestID string `xml:"requestId"`
	Body      []byte `xml:",innerxml"`
}

// bodyOf marshals a response struct and keeps what is inside its root.
func bodyOf(v any) []byte {
	b, err := xml.Marshal(v)
	if err != nil {
		panic("ec2test: " + err.Error()) // the response types are fixed; this cannot happen
	}
	b = b[bytes.IndexByte(b, '>')+1:]
	return b[:bytes.LastIndexByte(b, '<')]
}

// apiError is an EC2 error: a code, a message and an HTTP status.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// errorStatus is the HTTP status EC2 answers an error code with: 503 for
// throttling and unavailability, 500 for the server's own errors
// (capacity included), 400 for the caller's.
func errorStatus(code string) int {
	switch code {
	case "RequestLimitExceeded", "ServiceUnavailable", "Unavailable":
		return http.StatusServiceUnavailable
	case "InternalError", "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientAddressCapacity":
		return http.StatusInternalServerError
	case "AuthFailure":
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

func fail(code, message string) *apiError {
	return &apiError{Status: errorStatus(code), Code: code, Message: message}
}

type errorResponse struct {
	XMLName   xml.Name     `xml:"Response"`
	Errors    []errorEntry `xml:"Errors>Error"`
	RequestID string       `xml:"RequestID"`
}

type errorEntry struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

func writeXML(w http.ResponseWriter, status int, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		panic("ec2test: " + err.Error()) // as in bodyOf
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(body)
}

func writeError(w http.ResponseWriter, e *apiError, requestID string) {
	writeXML(w, e.Status, errorResponse{Errors: []errorEntry{{Code: e.Code, Message: e.Message}}, RequestID: requestID})
}

type stateXML struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type reasonXML struct {
	Code    string `xml:"code"`
	Message string `xml:"message"`
}

type tagXML struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type groupXML struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type profileXML struct {
	Arn string `xml:"arn"`
	ID  string `xml:"id"`
}

type deviceXML struct {
	DeviceName string `xml:"deviceName"`
}

type instanceXML struct {
	InstanceID         string      `xml:"instanceId"`
	ImageID            string      `xml:"imageId"`
	State              stateXML    `xml:"instanceState"`
	PrivateDNSName     string      `xml:"privateDnsName"`
	DNSName            string      `xml:"dnsName"`
	Reason             string      `xml:"reason"`
	KeyName            string      `xml:"keyName,omitempty"`
	AMILaunchIndex     int         `xml:"amiLaunchIndex"`
	InstanceType       string      `xml:"instanceType"`
	LaunchTime         string      `xml:"launchTime"`
	SubnetID           string      `xml:"subnetId,omitempty"`
	IPAddress          string      `xml:"ipAddress,omitempty"`
	Groups             []groupXML  `xml:"groupSet>item"`
	StateReason        *reasonXML  `xml:"stateReason,omitempty"`
	RootDeviceType     string      `xml:"rootDeviceType"`
	BlockDevices       []deviceXML `xml:"blockDeviceMapping>item"`
	InstanceLifecycle  string      `xml:"instanceLifecycle,omitempty"`
	ClientToken        string      `xml:"clientToken,omitempty"`
	Tags               []tagXML    `xml:"tagSet>item"`
	IamInstanceProfile *profileXML `xml:"iamInstanceProfile,omitempty"`
}

type reservationXML struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Groups        []groupXML    `xml:"groupSet>item"`
	Instances     []instanceXML `xml:"instancesSet>item"`
}

type describeInstancesResponse struct {
	Reservations []reservationXML `xml:"reservationSet>item"`
	NextToken    string           `xml:"nextToken,omitempty"`
}

type stateChangeXML struct {
	InstanceID    string   `xml:"instanceId"`
	CurrentState  stateXML `xml:"currentState"`
	PreviousState stateXML `xml:"previousState"`
}

type terminateInstancesResponse struct {
	Instances []stateChangeXML `xml:"instancesSet>item"`
}

type imageXML struct {
	ImageID        string `xml:"imageId"`
	ImageLocation  string `xml:"imageLocation"`
	ImageState     string `xml:"imageState"`
	ImageOwnerID   string `xml:"imageOwnerId"`
	IsPublic       bool   `xml:"isPublic"`
	Architecture   string `xml:"architecture"`
	ImageType      string `xml:"imageType"`
	Name           string `xml:"name"`
	RootDeviceType string `xml:"rootDeviceType"`
}

type describeImagesResponse struct {
	Images []imageXML `xml:"imagesSet>item"`
}

type keyPairXML struct {
	KeyPairID      string `xml:"keyPairId"`
	KeyName        string `xml:"keyName"`
	KeyFingerprint string `xml:"keyFingerprint"`
}

type describeKeyPairsResponse struct {
	KeyPairs []keyPairXML `xml:"keySet>item"`
}

type createKeyPairResponse struct {
	KeyPairID      string `xml:"keyPairId"`
	KeyName        string `xml:"keyName"`
	KeyFingerprint string `xml:"keyFingerprint"`
	KeyMaterial    string `xml:"keyMaterial"`
}

type securityGroupXML struct {
	OwnerID          string `xml:"ownerId"`
	GroupID          string `xml:"groupId"`
	GroupName        string `xml:"groupName"`
	GroupDescription string `xml:"groupDescription"`
}

type describeSecurityGroupsResponse struct {
	Groups []securityGroupXML `xml:"securityGroupInfo>item"`
}

type createSecurityGroupResponse struct {
	Return  bool   `xml:"return"`
	GroupID string `xml:"groupId"`
}

type addressXML struct {
	PublicIP      string `xml:"publicIp"`
	AllocationID  string `xml:"allocationId"`
	Domain        string `xml:"domain"`
	InstanceID    string `xml:"instanceId,omitempty"`
	AssociationID string `xml:"associationId,omitempty"`
}

type describeAddressesResponse struct {
	Addresses []addressXML `xml:"addressesSet>item"`
}

type associateAddressResponse struct {
	Return        bool   `xml:"return"`
	AssociationID string `xml:"associationId"`
}

type returnResponse struct {
	Return bool `xml:"return"`
}

func validTagKey(k string) *apiError {
	switch {
	case k == "":
		return fail("InvalidParameterValue", "Tag keys must not be empty")
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return fail("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
	case len(k) > 128:
		return fail("InvalidParameterValue", "Tag keys must be at most 128 characters")
	}
	return nil
}
