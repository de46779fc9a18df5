package status

import (
	"fmt"
	"testing"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("slave %q refused: %w", "x", slave.ErrUnknownSlave), "unknown_slave"},
		{slave.ErrBadPassword, "bad_password"},
		{slave.ErrDuplicate, "duplicate"},
		{latent.ErrAttached, "duplicate"},
		{latent.ErrNotSubstantiating, "latent_not_substantiating"},
		{latent.ErrClosed, "other"},
		{slave.ErrClosed, "other"},
	} {
		if got := refusal(tc.err); got != tc.want {
			t.Errorf("refusal(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
