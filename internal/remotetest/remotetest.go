// Package remotetest holds what tests of every transport do with remote commands: run one to its end and read its updates.
package remotetest

import (
	"context"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/protocol/remote"
)

// Run runs a command to its end and returns its updates; a command that
// cannot start or does not complete fails t.
func Run(t testing.TB, ctx context.Context, c remote.Commander, req remote.Request) []remote.Update {
	t.Helper()
	cmd, err := c.Start(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", req.Name, err)
	}
	var updates []remote.Update
	for u := range cmd.Updates() {
		updates = append(updates, u)
	}
	if err := cmd.Wait(ctx); err != nil {
		t.Fatalf("%s: %v", req.Name, err)
	}
	return updates
}

// Output joins the text of the updates with key, and returns the last rc
// (-100 if none came).
func Output(updates []remote.Update, key string) (string, int) {
	var b strings.Builder
	rc := -100
	for _, u := range updates {
		if u.Key == key {
			b.WriteString(u.Text)
		}
		if u.Key == "rc" {
			rc = u.RC
		}
	}
	return b.String(), rc
}

// Value is the value of the first update with key, nil if none.
func Value(updates []remote.Update, key string) any {
	for _, u := range updates {
		if u.Key == key {
			return u.Value
		}
	}
	return nil
}
