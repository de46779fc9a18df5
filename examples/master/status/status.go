// Package status serves the example master's status page, its JSON twin and its Prometheus metrics.
package status

import (
	"embed"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/examples/master/internal/web"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/slave"
)

// DefaultPageBuilds is how many builds the page and the JSON show at a
// time unless Config.PageBuilds says otherwise.
const DefaultPageBuilds = 20

// Step is one step of a build, as the master ran it.
type Step struct {
	Name   string `json:"name"`
	State  string `json:"state"` // as Build.State
	RC     int    `json:"rc"`
	Output string `json:"output,omitempty"`
}

// Build is one build, as the master records it. State is "waiting",
// "running", "success", "failure" or "exception".
type Build struct {
	ID       int       `json:"id"`
	Builder  string    `json:"builder"`
	Slave    string    `json:"slave,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	State    string    `json:"state"`
	Queued   time.Time `json:"queued,omitzero"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	Steps    []Step    `json:"steps,omitempty"`
}

// Builds is the master's record of builds.
type Builds interface {
	// Recent returns up to n builds, newest first.
	Recent(n int) []Build
	// Before returns up to n of the builds older than build id, newest
	// first.
	Before(id, n int) []Build
}

// Config is what a Status shows and where it registers its metrics.
type Config struct {
	// Manager is the slave manager whose slaves the page lists; required.
	Manager *slave.Manager
	// Lifecycle, if set, returns the Lifecycle whose latent slaves'
	// states the rows and the gauge of running instances show, or nil
	// while there is none; it is called for every page and every scrape,
	// so that a Lifecycle a reconfiguration created shows.
	Lifecycle func() *latent.Lifecycle
	// Builds, if set, gives the recent builds.
	Builds Builds
	// PageBuilds is how many builds a page shows; "?before=ID" asks for
	// the older ones. Zero means DefaultPageBuilds.
	PageBuilds int
	// Builders returns the names of the builders that get a "force build"
	// button; it is called for every page, so builders added by a
	// reconfiguration get theirs. Nil means none.
	Builders func() []string
	// ForcePath is where the buttons POST builder=NAME, such as "/force";
	// "" means no buttons.
	ForcePath string
	// FormToken, if set, returns a new token for the forms of a page,
	// which they POST as web.TokenField: the web guard refuses a
	// browser's form without one (see package web).
	FormToken func() string
	// LatentKind returns the driver kind ("local", "ec2", "libvirt") of a
	// latent slave, which labels the gauge of running instances; nil or
	// "" means "unknown".
	LatentKind func(slave string) string
	// MaxReasonLength bounds the bytes of a pause's reason (400 beyond);
	// zero means DefaultMaxReasonLength.
	MaxReasonLength int
	// Limits logs the limits hit; nil means limit.New(Logger).
	Limits *limit.Log
	// Registry receives the metrics unless Metrics is set; nil means a
	// new one.
	Registry *prometheus.Registry
	// Metrics, if set, are metrics made by NewMetrics before the manager
	// and the Lifecycle, so that their notifiers and Observe can feed
	// them; New adds the slave gauges to their registry. Nil means
	// NewMetrics(Registry).
	Metrics *Metrics
	// Logger receives the lines of failed page writes; nil means
	// slog.Default().
	Logger *slog.Logger
	// Cluster, if set, describes the cluster of masters this one belongs
	// to, for every page and JSON; nil: a master alone.
	Cluster func() *Cluster
}

// Status serves the status page, the JSON and the metrics of one master.
type Status struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	limits  *limit.Log
	handler http.Handler
	cancel  func()        // ends the subscription to the manager's events
	done    chan struct{} // closed when the event reader ends

	// mu guards pauses, and makes a pause or an unpause and its record
	// one step for a snapshot.
	mu     sync.Mutex
	pauses map[string]Pause // why the slaves paused from the web are paused
}

// New builds a Status, registers the slave gauges and subscribes to the
// manager's events to count refused logins until Close. A Metrics serves
// one Status only.
func New(cfg Config) *Status {
	s := &Status{cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics, limits: cfg.Limits, done: make(chan struct{}), pauses: map[string]Pause{}}
	if s.cfg.PageBuilds <= 0 {
		s.cfg.PageBuilds = DefaultPageBuilds
	}
	if s.cfg.MaxReasonLength <= 0 {
		s.cfg.MaxReasonLength = DefaultMaxReasonLength
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.limits == nil {
		s.limits = limit.New(s.log)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(cfg.Registry)
	}
	s.metrics.watch(cfg.Manager)
	if cfg.Lifecycle != nil {
		s.metrics.watchLatent(cfg.Lifecycle, cfg.LatentKind)
	}
	events, cancel := cfg.Manager.Subscribe()
	s.cancel = cancel
	go func() { // owned by s: Close waits for it
		defer close(s.done)
		s.metrics.count(events)
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /api/status", s.json)
	mux.HandleFunc("GET /slaves/{name}/pause", s.pauseForm)
	mux.HandleFunc("POST /slaves/{name}/{action}", s.control)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.handler = mux
	return s
}

// Handler serves the page on "/", the JSON on "/api/status", the
// metrics on "/metrics", and the operator's controls of a slave on
// "POST /slaves/NAME/pause" (optional reason=), ".../unpause" and
// ".../shutdown".
func (s *Status) Handler() http.Handler { return s.handler }

// Metrics returns the metrics the master feeds with its builds, latent
// events and mail.
func (s *Status) Metrics() *Metrics { return s.metrics }

// Close ends the subscription to the manager's events and waits for its
// reader. The handler keeps serving; only refused logins go uncounted.
func (s *Status) Close() {
	s.cancel()
	<-s.done
}

// Snapshot is what "/" shows and "/api/status" serves as JSON.
type Snapshot struct {
	Time     time.Time `json:"time"`
	Slaves   []Slave   `json:"slaves"`
	Builders []string  `json:"builders"`
	Builds   []Build   `json:"builds"` // one page, newest first
	// Older, if not zero, is where the next page starts: ask for it with
	// "?before=Older".
	Older int `json:"older,omitempty"`
	// Before is the page's "?before=" parameter; 0 for the first page.
	Before int `json:"before,omitempty"`
	// Cluster is the cluster of masters; nil for a master alone.
	Cluster *Cluster `json:"cluster,omitempty"`
}

// Slave is one slave's row: the manager's State with its latent Status.
type Slave struct {
	Name string `json:"name"`
	// State is one of "attached", "detached", "never attached", "missing",
	// "paused", "shutting down", or for a latent slave "stopped",
	// "substantiating", "idle", "running", "stopping", "quarantined".
	State string `json:"state"`
	// Attached and Paused are the manager's flags, which State may hide
	// ("shutting down" is paused too).
	Attached   bool           `json:"attached"`
	Paused     bool           `json:"paused"`
	Since      time.Time      `json:"since,omitzero"` // when it entered State, if known
	LastSeen   time.Time      `json:"last_seen,omitzero"`
	RemoteAddr string         `json:"remote_addr,omitempty"`
	Running    int            `json:"running"`
	MaxBuilds  int            `json:"max_builds"` // 0 means no limit
	Properties map[string]any `json:"properties,omitempty"`
	Info       Info           `json:"info"`
	Latent     *Latent        `json:"latent,omitempty"` // nil for a normal slave
	// Pause is why the slave is paused, if it was paused from the page or
	// the JSON API.
	Pause *Pause `json:"pause,omitempty"`
}

// Info is what the slave reported about itself when it last attached.
// It is untrusted: the page escapes it.
type Info struct {
	Admin    string            `json:"admin,omitempty"`
	Host     string            `json:"host,omitempty"`
	Access   string            `json:"access,omitempty"`
	OS       string            `json:"os,omitempty"`
	NumCPUs  int               `json:"cpus,omitempty"`
	Version  string            `json:"version,omitempty"`
	Basedir  string            `json:"basedir,omitempty"`
	Commands map[string]string `json:"commands,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

// Latent is a latent slave's lifecycle state.
type Latent struct {
	State            string    `json:"state"`
	Since            time.Time `json:"since"`
	Reason           string    `json:"reason,omitempty"`
	Instance         string    `json:"instance,omitempty"`
	Failures         int       `json:"failures,omitempty"`
	LastError        string    `json:"last_error,omitempty"`
	QuarantinedUntil time.Time `json:"quarantined_until,omitzero"`
}

// Snapshot gathers what the page shows now, with the first page of
// builds.
func (s *Status) Snapshot() Snapshot { return s.snapshot(0) }

// snapshot is Snapshot with the page of builds older than build before,
// if not zero.
func (s *Status) snapshot(before int) Snapshot {
	snap := Snapshot{Time: time.Now(), Slaves: s.slaves()}
	if s.cfg.Builders != nil {
		snap.Builders = s.cfg.Builders()
	}
	if snap.Builders == nil {
		snap.Builders = []string{}
	}
	if s.cfg.Builds != nil {
		n := s.cfg.PageBuilds
		if before > 0 {
			snap.Builds = s.cfg.Builds.Before(before, n+1)
		} else {
			snap.Builds = s.cfg.Builds.Recent(n + 1)
		}
		if len(snap.Builds) > n { // one more than the page: there are older ones
			snap.Builds = snap.Builds[:n]
			snap.Older = snap.Builds[n-1].ID
		}
	}
	if snap.Builds == nil {
		snap.Builds = []Build{}
	}
	snap.Before = before
	if s.cfg.Cluster != nil {
		snap.Cluster = s.cfg.Cluster()
	}
	return snap
}

// slaves returns every slave's row, with the reason of each pause made
// from the web; it forgets the reasons of slaves no longer paused.
func (s *Status) slaves() []Slave {
	latents := map[string]latent.Status{}
	if lc := s.lifecycle(); lc != nil {
		for _, st := range lc.Statuses() {
			latents[st.Name] = st
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	states := s.cfg.Manager.States()
	rows := make([]Slave, 0, len(states))
	paused := make(map[string]bool, len(s.pauses))
	for _, st := range states {
		ls, ok := latents[st.Name]
		r := row(st, ls, ok)
		if p, ok := s.pauses[st.Name]; ok && st.Paused {
			r.Pause, paused[st.Name] = &p, true
		}
		rows = append(rows, r)
	}
	for name := range s.pauses {
		if !paused[name] {
			delete(s.pauses, name)
		}
	}
	return rows
}

// lifecycle returns the Lifecycle whose states the page shows now, or nil.
func (s *Status) lifecycle() *latent.Lifecycle {
	if s.cfg.Lifecycle == nil {
		return nil
	}
	return s.cfg.Lifecycle()
}

// row is the Slave of st, with ls if the slave is latent.
func row(st slave.State, ls latent.Status, isLatent bool) Slave {
	r := Slave{
		Name:       st.Name,
		Attached:   st.Attached,
		Paused:     st.Paused,
		Since:      st.Since,
		LastSeen:   st.LastSeen,
		RemoteAddr: st.RemoteAddr,
		Running:    st.Running,
		MaxBuilds:  st.MaxBuilds,
		Properties: st.Properties,
		Info: Info{
			Admin: st.Info.Admin, Host: st.Info.Host, Access: st.Info.Access, OS: st.Info.OS,
			NumCPUs: st.Info.NumCPUs, Version: st.Info.Version, Basedir: st.Info.Basedir,
			Commands: st.Info.Commands, Extra: st.Info.Extra,
		},
	}
	switch {
	case st.Attached:
		r.State = "attached"
	case st.Missing:
		r.State = "missing"
	case st.Since.IsZero():
		r.State = "never attached"
	default:
		r.State = "detached"
	}
	if isLatent {
		r.State, r.Since = ls.State.String(), ls.Since
		r.Latent = &Latent{
			State:            ls.State.String(),
			Since:            ls.Since,
			Reason:           ls.Reason,
			Instance:         ls.Instance.ID,
			Failures:         ls.Failures,
			QuarantinedUntil: ls.QuarantinedUntil,
		}
		if ls.LastError != nil {
			r.Latent.LastError = ls.LastError.Error()
		}
	}
	switch {
	case st.ShuttingDown:
		r.State = "shutting down"
	case st.Paused:
		r.State = "paused"
	}
	return r
}

//go:embed page.html pause.html style.css
var files embed.FS

var (
	pageTmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
		"stateClass": stateClass,
		"contains":   strings.Contains,
		"pathEscape": url.PathEscape,
	}).ParseFS(files, "page.html", "style.css"))
	pauseTmpl = template.Must(template.New("pause.html").ParseFS(files, "pause.html", "style.css"))
)

// stateClass is the CSS class of a slave's or a build's state.
func stateClass(state string) string {
	switch state {
	case "attached", "idle", "success", "claimed":
		return "ok"
	case "running":
		return "run"
	case "substantiating", "paused", "shutting down", "stopping", "waiting", "queued":
		return "busy"
	case "missing", "quarantined", "failure", "exception", "lost":
		return "bad"
	}
	return "off"
}

// view is the page template's data: the Snapshot with helpers.
type view struct {
	Snapshot
	ForcePath  string
	TokenField string // the form field of Token
	Token      string // the page's token for its forms, if any
}

// when is a moment with how long before the snapshot it was.
type when struct {
	Time time.Time
	Ago  string
}

// When is t with how long before the snapshot it was, to the second.
func (v view) When(t time.Time) when {
	return when{t, v.Time.Sub(t).Round(time.Second).String() + " ago"}
}

// Took says how long b ran, or has run so far.
func (v view) Took(b Build) string {
	end := b.Finished
	if end.IsZero() {
		end = v.Time
	}
	return end.Sub(b.Started).Round(time.Second).String()
}

// before reads the page's "?before=" parameter, a build ID; it answers
// 400 and returns false for a bad one.
func before(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("before")
	if v == "" {
		return 0, true
	}
	id, err := strconv.Atoi(v)
	if err != nil || id <= 0 {
		http.Error(w, "before: want a build number", http.StatusBadRequest)
		return 0, false
	}
	return id, true
}

// htmlHeaders sets the headers of an HTML page: no script, forms only to
// this site, no framing.
func htmlHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY") // frame-ancestors for browsers without it
}

func (s *Status) page(w http.ResponseWriter, r *http.Request) {
	before, ok := before(w, r)
	if !ok {
		return
	}
	htmlHeaders(w)
	v := view{Snapshot: s.snapshot(before), ForcePath: s.cfg.ForcePath, TokenField: web.TokenField}
	if s.cfg.FormToken != nil {
		v.Token = s.cfg.FormToken()
	}
	if err := pageTmpl.Execute(w, v); err != nil {
		s.log.Warn("status page not written", "remote", r.RemoteAddr, "reason", err.Error())
	}
}

func (s *Status) json(w http.ResponseWriter, r *http.Request) {
	before, ok := before(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.snapshot(before)); err != nil {
		s.log.Warn("status JSON not written", "remote", r.RemoteAddr, "reason", err.Error())
	}
}
