package builds

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// ForceHandler serves POST requests that force a build through force: the builder is
// the builder parameter (query or form), reason an optional one. A browser
// form is redirected to "/" with 303; a client that accepts
// application/json gets {"id": ID, "builder": NAME} with 202, or
// {"error": ...}: 404 for an unknown builder, 400 for a reason over
// max_reason_length, 429 when max_queued_builds of the builder wait
// already, 503 while shutting down.
// ForceFunc forces a build of builder for reason and returns its id: a
// Runner's build number (Runner.ForceID), or the id of a request queued for
// the master that holds a fitting slave. Its errors are the Runner's.
type ForceFunc func(builder, reason string) (id any, err error)

func ForceHandler(force ForceFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		wantJSON := strings.Contains(req.Header.Get("Accept"), "application/json")
		fail := func(code int, err error) {
			if wantJSON {
				writeJSON(w, code, map[string]string{"error": err.Error()})
				return
			}
			http.Error(w, err.Error(), code)
		}
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			fail(http.StatusMethodNotAllowed, errors.New("use POST to force a build"))
			return
		}
		if err := req.ParseForm(); err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		builder := req.Form.Get("builder")
		reason := req.Form.Get("reason")
		if reason == "" {
			reason = "forced from " + req.RemoteAddr
		}
		id, err := force(builder, reason)
		switch {
		case errors.Is(err, ErrUnknownBuilder):
			fail(http.StatusNotFound, err)
		case errors.Is(err, ErrReasonTooLong):
			fail(http.StatusBadRequest, err)
		case errors.Is(err, ErrQueueFull):
			fail(http.StatusTooManyRequests, err)
		case err != nil:
			fail(http.StatusServiceUnavailable, err)
		case wantJSON:
			writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "builder": builder})
		default:
			http.Redirect(w, req, "/", http.StatusSeeOther)
		}
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away
}
