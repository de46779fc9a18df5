package ec2_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/buildslave/buildslave/ec2"
	"github.com/buildslave/buildslave/ec2/ec2test"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/slave"
)

func TestDefaults(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"))
	sl := s.Slave()
	if sl.Name() != "bot1" || s.InstanceType() != "m1.large" {
		t.Errorf("name %q type %q", sl.Name(), s.InstanceType())
	}
	if got := sl.MissingTimeout(); got != 20*time.Minute {
		t.Errorf("missing_timeout = %v, want 20m", got)
	}
	if got := s.BuildWaitTimeout(); got != 10*time.Minute {
		t.Errorf("build_wait_timeout = %v, want 10m", got)
	}
	if sl.MaxBuilds() != 0 || sl.KeepaliveInterval() != slave.DefaultKeepaliveInterval || len(sl.NotifyOnMissing()) != 0 {
		t.Errorf("normal slave defaults changed: %d %v %v", sl.MaxBuilds(), sl.KeepaliveInterval(), sl.NotifyOnMissing())
	}
	if s.String() != "ec2 slave bot1 (m1.large in us-east-1)" {
		t.Errorf("String = %q (region default us-east-1)", s)
	}
	inst := start(t, s, "m1")
	got := instance(t, fake, inst.ID)
	stop(t, s, inst)
	if got.KeyName != "latent_buildbot_slave" || !slices.Equal(got.SecurityGroups, []string{"latent_buildbot_slave"}) {
		t.Errorf("keypair %q groups %v, want latent_buildbot_slave", got.KeyName, got.SecurityGroups)
	}
	if got.Spot || got.SubnetID != "" || got.InstanceProfile != "" || got.UserData != "" {
		t.Errorf("unasked-for settings: %+v", got)
	}
	if want := map[string]string{ec2.MasterTag: "m1", ec2.SlaveTag: "bot1"}; !maps(got.Tags, want) {
		t.Errorf("tags %v, want %v", got.Tags, want)
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v != w {
			return false
		}
	}
	return true
}

func TestSlaveOptionsPassThrough(t *testing.T) {
	s, err := ec2.New("bot1", "sekrit", "m1.large", ec2.AMI("ami-12345"),
		ec2.SlaveOptions(
			slave.Properties(map[string]any{"os": "linux"}),
			slave.MaxBuilds(2),
			slave.KeepaliveInterval(slave.Disabled),
			slave.NotifyOnMissing("a@example.org", "b@example.org"),
			slave.MissingTimeout(300*time.Second),
		),
		ec2.BuildWaitTimeout(-1))
	if err != nil {
		t.Fatal(err)
	}
	sl := s.Slave()
	if sl.Properties()["os"] != "linux" || sl.MaxBuilds() != 2 || sl.KeepaliveInterval() != slave.Disabled ||
		len(sl.NotifyOnMissing()) != 2 || sl.MissingTimeout() != 5*time.Minute || s.BuildWaitTimeout() != -1 {
		t.Errorf("options not applied: %v %d %v %v %v %v", sl.Properties(), sl.MaxBuilds(), sl.KeepaliveInterval(),
			sl.NotifyOnMissing(), sl.MissingTimeout(), s.BuildWaitTimeout())
	}
}

func TestNewInvalid(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	short := filepath.Join(t.TempDir(), "aws_id")
	os.WriteFile(short, []byte("only-the-id\n"), 0o600)
	ami := ec2.AMI("ami-12345")
	for _, tc := range []struct {
		name, slaveName, password, instanceType string
		opts                                    []ec2.Option
		field                                   string
	}{
		{"no name", "", "pw", "m1.large", []ec2.Option{ami}, "name"},
		{"no password", "bot", "", "m1.large", []ec2.Option{ami}, "password"},
		{"no instance type", "bot", "pw", "", []ec2.Option{ami}, "instance_type"},
		{"no ami", "bot", "pw", "m1.large", nil, "ami"},
		{"ami and filters", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.ValidAMIOwners(1)}, "ami"},
		{"malformed ami", "bot", "pw", "m1.large", []ec2.Option{ec2.AMI("12345")}, "ami"},
		{"bad owner", "bot", "pw", "m1.large", []ec2.Option{ec2.ValidAMIOwners(-5)}, "valid_ami_owners"},
		{"no owners", "bot", "pw", "m1.large", []ec2.Option{ec2.ValidAMIOwners()}, "valid_ami_owners"},
		{"bad regex", "bot", "pw", "m1.large", []ec2.Option{ec2.ValidAMILocationRegex("(")}, "valid_ami_location_regex"},
		{"identifier alone", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.Identifier("id")}, "secret_identifier"},
		{"secret alone", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.SecretIdentifier("s")}, "identifier"},
		{"keys and file", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.Identifier("id"), ec2.SecretIdentifier("s"), ec2.AWSIDFilePath(short)}, "aws_id_file_path"},
		{"missing file", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.AWSIDFilePath(missing)}, "aws_id_file_path"},
		{"one-line file", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.AWSIDFilePath(short)}, "aws_id_file_path"},
		{"empty keypair", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.KeypairName("")}, "keypair_name"},
		{"security_name in VPC", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.SubnetID("subnet-1"), ec2.SecurityName("x")}, "security_name"},
		{"bad subnet", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.SubnetID("net-1")}, "subnet_id"},
		{"bad group id", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.SecurityGroupIDs("default")}, "security_group_ids"},
		{"spot price", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.SpotInstance(0)}, "max_spot_price"},
		{"reserved tag", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.Tags(map[string]string{ec2.MasterTag: "x"})}, "tags"},
		{"aws tag", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.Tags(map[string]string{"aws:x": "x"})}, "tags"},
		{"bad template", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.UserData("{{.Nope}}")}, "user_data"},
		{"poll interval", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.PollInterval(0)}, "poll_interval"},
		{"stop timeout", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.StopTimeout(-1)}, "stop_timeout"},
		{"retry", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.Retry(0, time.Second)}, "retry"},
		{"slave option", "bot", "pw", "m1.large", []ec2.Option{ami, ec2.SlaveOptions(slave.MaxBuilds(-1))}, "max_builds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ec2.New(tc.slaveName, tc.password, tc.instanceType, tc.opts...)
			var ce *slave.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *slave.ConfigError", err)
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Errorf("err = %v, want it to name %s", err, tc.field)
			}
		})
	}
}

// TestCredentialsPrecedence checks identifier/secret_identifier >
// aws_id_file_path > ~/.ec2/aws_id > the SDK's default chain, by the key
// the fake sees requests signed with.
func TestCredentialsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(file, []byte("FILEKEY\nfile-secret\n"), 0o600)
	emptyHome := t.TempDir()
	for _, tc := range []struct {
		name string
		home string // "" keeps TestMain's, whose ~/.ec2/aws_id has publickey
		opts []ec2.Option
		want string
	}{
		{"explicit beats the files", "", []ec2.Option{ec2.Identifier("EXPLICIT"), ec2.SecretIdentifier("s")}, "EXPLICIT"},
		{"aws_id_file_path beats ~/.ec2/aws_id", "", []ec2.Option{ec2.AWSIDFilePath(file)}, "FILEKEY"},
		{"~/.ec2/aws_id beats the default chain", "", nil, "publickey"},
		{"default chain", emptyHome, nil, "ENVKEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
			t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
			if tc.home != "" {
				t.Setenv("HOME", tc.home)
			}
			fake := newFake(t, ec2test.Options{})
			s, err := ec2.New("bot1", "sekrit", "m1.large", append([]ec2.Option{ec2.AMI("ami-12345"), ec2.Endpoint(fake.URL)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.List(context.Background(), "m1"); err != nil {
				t.Fatal(err)
			}
			if got := fake.AccessKeyIDs(); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("signed with %v, want %s", got, tc.want)
			}
		})
	}
}

func TestCredentialsFileWarnsWhenOthersMayRead(t *testing.T) {
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o604} {
		t.Run(mode.String(), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "aws_id")
			os.WriteFile(file, []byte("FILEKEY\nfile-secret\n"), mode)
			os.Chmod(file, mode)
			logs := &testlog.Buffer{}
			_, err := ec2.New("bot1", "sekrit", "m1.large", ec2.AMI("ami-12345"), ec2.AWSIDFilePath(file),
				ec2.Endpoint("http://127.0.0.1:1"), ec2.Logger(slog.New(slog.NewTextHandler(logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(logs.String(), "readable by group or others")
			if want := mode&0o044 != 0; warned != want {
				t.Errorf("mode %v: warned %v, want %v; logs: %s", mode, warned, want, logs)
			}
			if strings.Contains(logs.String(), "file-secret") {
				t.Errorf("the secret was logged: %s", logs)
			}
		})
	}
}

// TestNeverShowsSecrets formats and logs a slave every way and looks for
// its password and secret key.
func TestNeverShowsSecrets(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	s, logs := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"), ec2.SecretIdentifier("TOPSECRETKEY"))
	var out strings.Builder
	fmt.Fprintf(&out, "%v %+v %s %#v", s, s, s, s.String())
	slog.New(slog.NewTextHandler(&out, nil)).Info("slave", "s", s)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("slave", "s", s)
	stop(t, s, start(t, s, "m1"))
	for _, text := range []string{out.String(), logs.String()} {
		if strings.Contains(text, "TOPSECRETKEY") || strings.Contains(text, "sekrit") || strings.Contains(text, "fresh") {
			t.Errorf("a secret shows: %s", text)
		}
	}
}

func TestLaunchSettings(t *testing.T) {
	fake := newFake(t, ec2test.Options{})
	sg := fake.AddSecurityGroup("vpc-group")
	s, _ := newSlave(t, fake, "bot1", ec2.AMI("ami-12345"),
		ec2.SubnetID("subnet-0abc"), ec2.SecurityGroupIDs(sg),
		ec2.InstanceProfile("buildbot-profile"),
		ec2.BlockDeviceMappings(types.BlockDeviceMapping{DeviceName: aws.String("/dev/sda1"), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(50)}}),
		ec2.Tags(map[string]string{"team": "ci", "Name": "bot1"}),
		ec2.Region("eu-west-1"))
	inst := start(t, s, "m1")
	got := instance(t, fake, inst.ID)
	stop(t, s, inst)
	if got.SubnetID != "subnet-0abc" || !slices.Equal(got.SecurityGroupIDs, []string{sg}) || len(got.SecurityGroups) != 0 {
		t.Errorf("network: subnet %q ids %v names %v", got.SubnetID, got.SecurityGroupIDs, got.SecurityGroups)
	}
	if got.InstanceProfile != "buildbot-profile" || !slices.Equal(got.BlockDevices, []string{"/dev/sda1"}) {
		t.Errorf("profile %q devices %v", got.InstanceProfile, got.BlockDevices)
	}
	if got.Tags["team"] != "ci" || got.Tags["Name"] != "bot1" || got.Tags[ec2.MasterTag] != "m1" {
		t.Errorf("tags %v", got.Tags)
	}
	if fake.SecurityGroups()[0] != "vpc-group" || len(fake.SecurityGroups()) != 1 {
		t.Errorf("in a VPC no security_name group is made: %v", fake.SecurityGroups())
	}
	if !strings.Contains(s.String(), "eu-west-1") {
		t.Errorf("region: %s", s)
	}
}

// TestAWSIDFileThatCannotBeLookedAt: only a ~/.ec2/aws_id that does not
// exist falls through to the SDK's default chain; any other error (here
// ENOTDIR: HOME is a file, which root cannot bypass as it does a
// permission error; or a directory in the file's place) refuses the slave
// with an error naming the file.
func TestAWSIDFileThatCannotBeLookedAt(t *testing.T) {
	fileHome := filepath.Join(t.TempDir(), "home-is-a-file")
	if err := os.WriteFile(fileHome, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dirHome := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dirHome, ".ec2", "aws_id"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, home, want string }{
		{"a file in the path", fileHome, "not a directory"},
		{"a directory in its place", dirHome, "is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
			t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
			t.Setenv("HOME", tc.home)
			_, err := ec2.New("bot1", "sekrit", "m1.large", ec2.AMI("ami-12345"), ec2.Endpoint("http://127.0.0.1:1"))
			var ce *slave.ConfigError
			if !errors.As(err, &ce) || ce.Field != "aws_id_file_path" {
				t.Fatalf("New = %v, want a *slave.ConfigError on aws_id_file_path", err)
			}
			if path := filepath.Join(tc.home, ".ec2", "aws_id"); !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want it to name %s and say %q", err, path, tc.want)
			}
		})
	}
}
