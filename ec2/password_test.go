package ec2_test

import (
	"testing"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
)

// TestPassesPasswordFollowsTheUserData: only instances whose user data
// carries {{.Password}} present their start's password, so only then is
// the configured password refused while an instance starts.
func TestPassesPasswordFollowsTheUserData(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	for _, tc := range []struct {
		opts []ec2.Option
		want bool
	}{
		{nil, false},
		{[]ec2.Option{ec2.UserData("BUILDSLAVE_NAME={{.Name}}\n")}, false},
		{[]ec2.Option{ec2.UserData("BUILDSLAVE_PASSWORD={{.Password}}\n")}, true},
	} {
		s, _ := newSlave(t, fake, "bot1", append([]ec2.Option{ec2.AMI("ami-12345")}, tc.opts...)...)
		if got := s.PassesPassword(); got != tc.want {
			t.Errorf("PassesPassword with %d options = %v, want %v", len(tc.opts), got, tc.want)
		}
	}
}
