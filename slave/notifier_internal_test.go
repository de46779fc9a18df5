package slave

import (
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/notify/notifytest"
)

// With no Notifier configured, missing-slave mail still goes out, through
// notify.Default(), with retries; a given Notifier is retried too, and a
// given *notify.Retrying is used as it is.
func TestNewManagerNotifierWiring(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := &notifytest.Recorder{}
	own := &notify.Retrying{Notifier: rec, Retries: 7}
	for name, tc := range map[string]struct {
		given notify.Notifier
		check func(*notify.Retrying) bool
	}{
		"none": {nil, func(r *notify.Retrying) bool {
			mail, ok := r.Notifier.(*notify.Mail)
			return ok && reflect.DeepEqual(mail, notify.Default())
		}},
		"recorder": {rec, func(r *notify.Retrying) bool { return r.Notifier == rec && r.Logger == quiet }},
		"retrying": {own, func(r *notify.Retrying) bool { return r == own }},
	} {
		m, err := NewManager(Config{Logger: quiet, Notifier: tc.given})
		if err != nil {
			t.Fatal(err)
		}
		r, ok := m.notifier.(*notify.Retrying)
		if !ok || !tc.check(r) {
			t.Errorf("%s: the manager notifies through %#v", name, m.notifier)
		}
		m.Close()
	}
}
