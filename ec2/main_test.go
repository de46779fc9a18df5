package ec2_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestMain keeps the tests away from the developer's and CI's own AWS
// settings, and so from AWS: no credentials, profile, region or endpoint
// from the environment, no instance metadata service, and a home whose
// ~/.ec2/aws_id holds the example keys of Buildbot 0.8.6's manual.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "ec2-test-home")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, k := range []string{
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ROLE_ARN",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
	} {
		os.Unsetenv(k)
	}
	os.Setenv("HOME", home)
	os.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "no-aws-config"))
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "no-aws-credentials"))
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if err := writeAWSID(home, "publickey", "privatekey"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}

func writeAWSID(home, id, secret string) error {
	if err := os.MkdirAll(filepath.Join(home, ".ec2"), 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(home, ".ec2", "aws_id"), []byte(id+"\n"+secret+"\n"), 0o600)
}
