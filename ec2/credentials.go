package ec2

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// credentialSource is where a slave's AWS credentials come from: a static
// key pair (identifier and secret_identifier, or the aws_id file), or the
// SDK's default chain when provider is nil.
type credentialSource struct {
	provider aws.CredentialsProvider
	// id tells sources apart for sharing clients; it holds the access key
	// id and a hash of the secret, never the secret.
	id string
}

// resolveCredentials applies the precedence of Buildbot 0.8.6's manual: identifier and
// secret_identifier, else aws_id_file_path, else ~/.ec2/aws_id if it
// exists, else the SDK's default credential chain. Only a ~/.ec2/aws_id
// that does not exist falls through to the chain; one that cannot be
// looked at (a permission error, a path through a file) is an error
// naming it.
func resolveCredentials(st settings, log *slog.Logger, bad func(field, reason string) error) (credentialSource, error) {
	switch {
	case st.identifier != "" && st.secretIdentifier == "":
		return credentialSource{}, bad("secret_identifier", "give it with identifier, or neither")
	case st.identifier == "" && st.secretIdentifier != "":
		return credentialSource{}, bad("identifier", "give it with secret_identifier, or neither")
	case st.identifier != "" && st.awsIDFilePath != "":
		return credentialSource{}, bad("aws_id_file_path", "give either identifier and secret_identifier or aws_id_file_path")
	case st.identifier != "":
		return static(st.identifier, st.secretIdentifier, "explicit"), nil
	}
	path := st.awsIDFilePath
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return credentialSource{id: "default"}, nil
		}
		path = filepath.Join(home, ".ec2", "aws_id")
		_, err = os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return credentialSource{id: "default"}, nil
		case err != nil:
			// Not a missing file but one we cannot look at: falling back
			// to the default chain would start instances with other keys.
			return credentialSource{}, bad("aws_id_file_path", fmt.Sprintf("default file: %v", err))
		}
	}
	id, secret, err := readAWSIDFile(path, log)
	if err != nil {
		return credentialSource{}, bad("aws_id_file_path", err.Error())
	}
	return static(id, secret, "file "+path), nil
}

func static(id, secret, from string) credentialSource {
	sum := sha256.Sum256([]byte(secret))
	return credentialSource{
		provider: credentials.NewStaticCredentialsProvider(id, secret, ""),
		id:       from + ":" + id + ":" + hex.EncodeToString(sum[:8]),
	}
}

// readAWSIDFile reads the access key id (first line) and the secret
// access key (second line), and warns if others may read them.
func readAWSIDFile(path string, log *slog.Logger) (id, secret string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o044 != 0 {
		log.Warn("ec2: AWS credentials file is readable by group or others; chmod 600 it",
			"path", path, "mode", fi.Mode().Perm().String())
	}
	sc := bufio.NewScanner(f)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, strings.TrimSpace(sc.Text()))
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if len(lines) < 2 || lines[0] == "" || lines[1] == "" {
		return "", "", fmt.Errorf("%s: want the access key id on line 1 and the secret access key on line 2", path)
	}
	return lines[0], lines[1], nil
}
