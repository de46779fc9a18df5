package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/web"
	"github.com/buildslave/buildslave/slave"
)

// DefaultMaxReasonLength bounds the bytes of a pause's reason unless
// Config.MaxReasonLength says otherwise.
const DefaultMaxReasonLength = 1 << 10

// Pause is why and since when an operator paused a slave from the page or
// the JSON API; the manager itself keeps no reason.
type Pause struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// errUnknownAction is a POST to /slaves/NAME/ACTION with an ACTION other
// than pause, unpause or shutdown.
var errUnknownAction = errors.New("unknown action: want pause, unpause or shutdown")

// control serves POST /slaves/{name}/{action}: pause (with an optional
// reason), unpause or shutdown (graceful: the slave finishes its builds,
// then its process exits). A browser form is redirected to "/" with 303;
// a client that accepts application/json gets the slave's row with 200,
// or {"error": ...}: 404 for an unknown slave or action, 400 for a reason
// over MaxReasonLength, 409 to shut down a slave that is not attached.
func (s *Status) control(w http.ResponseWriter, r *http.Request) {
	wantJSON := strings.Contains(r.Header.Get("Accept"), "application/json")
	fail := func(code int, err error) {
		if wantJSON {
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		http.Error(w, err.Error(), code)
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, err)
		return
	}
	name := r.PathValue("name")
	var err error
	switch r.PathValue("action") {
	case "pause":
		reason := r.Form.Get("reason")
		if reason == "" {
			reason = "paused from " + r.RemoteAddr
		}
		if len(reason) > s.cfg.MaxReasonLength {
			s.limits.Hit("max_reason_length", s.cfg.MaxReasonLength, "pause refused: reason too long", "slave", name, "bytes", len(reason))
			fail(http.StatusBadRequest, fmt.Errorf("reason too long: %d bytes, at most %d (max_reason_length)", len(reason), s.cfg.MaxReasonLength))
			return
		}
		err = s.pause(name, reason)
	case "unpause":
		err = s.unpause(name)
	case "shutdown":
		err = s.cfg.Manager.GracefulShutdown(name)
	default:
		err = errUnknownAction
	}
	if err == nil {
		s.log.Info("slave "+r.PathValue("action")+" from the web page or API", "slave", name, "remote", r.RemoteAddr)
	}
	switch {
	case errors.Is(err, slave.ErrUnknownSlave), errors.Is(err, errUnknownAction):
		fail(http.StatusNotFound, err)
	case errors.Is(err, slave.ErrNotAttached):
		fail(http.StatusConflict, err)
	case err != nil:
		fail(http.StatusServiceUnavailable, err)
	case wantJSON:
		for _, row := range s.slaves() {
			if row.Name == name {
				writeJSON(w, http.StatusOK, row)
				return
			}
		}
		fail(http.StatusNotFound, fmt.Errorf("%w: %q", slave.ErrUnknownSlave, name)) // removed meanwhile
	default:
		http.Redirect(w, r, "/", http.StatusSeeOther)
	}
}

// pause pauses the named slave and records why; pausing a paused slave
// replaces its reason.
func (s *Status) pause(name, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cfg.Manager.Pause(name); err != nil {
		return err
	}
	s.pauses[name] = Pause{Reason: reason, Since: time.Now()}
	return nil
}

// unpause unpauses the named slave and forgets why it was paused.
func (s *Status) unpause(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cfg.Manager.Unpause(name); err != nil {
		return err
	}
	delete(s.pauses, name)
	return nil
}

// pauseForm serves GET /slaves/{name}/pause: the form that asks for a
// pause's reason, on a page of its own that does not refresh while the
// operator types.
func (s *Status) pauseForm(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.cfg.Manager.State(name); !ok {
		http.Error(w, fmt.Sprintf("%v: %q", slave.ErrUnknownSlave, name), http.StatusNotFound)
		return
	}
	htmlHeaders(w)
	v := struct {
		Name, TokenField, Token string
		MaxReason               int
	}{Name: name, TokenField: web.TokenField, MaxReason: s.cfg.MaxReasonLength}
	if s.cfg.FormToken != nil {
		v.Token = s.cfg.FormToken()
	}
	if err := pauseTmpl.Execute(w, v); err != nil {
		s.log.Warn("pause form not written", "remote", r.RemoteAddr, "reason", err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away
}
