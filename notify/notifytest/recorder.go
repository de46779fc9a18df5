package notifytest

import (
	"context"
	"sync"

	"github.com/buildslave/buildslave/notify"
)

// Recorder is a notify.Notifier that remembers every missing-slave notice
// it is given and sends nothing, for tests that check who would be told.
type Recorder struct {
	mu  sync.Mutex
	got []notify.Missing
}

var _ notify.Notifier = (*Recorder)(nil)

// SlaveMissing records m.
func (r *Recorder) SlaveMissing(_ context.Context, m notify.Missing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return nil
}

// Missing returns the notices recorded so far, oldest first.
func (r *Recorder) Missing() []notify.Missing {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notify.Missing(nil), r.got...)
}
