package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// TestMissingMailLogsThroughTheMasterLogger: the retries of a missing-slave
// notification are logged by the master's logger (its -log-json), not by
// slog's default one.
func TestMissingMailLogsThroughTheMasterLogger(t *testing.T) {
	m, out := startMaster(t, testConfig(t, `
[master]
[mail]
fromaddr = "ci@example.com"
relayhost = "127.0.0.1:1"
[[slaves]]
name = "s1"
password = "pw"
notify_on_missing = "admin@example.com"
missing_timeout = "1s"
`))
	c := slavetest.Attach(t, m.mgr, "s1", "pw", slave.Info{})
	c.Drop(errors.New("test drops the slave"))
	eventually(t, 10*time.Second, "the failed notification in the master's log", func() bool {
		return strings.Contains(out.String(), "notify: missing-slave notification failed")
	})
}
