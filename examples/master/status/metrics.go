package status

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/notify"
	"github.com/buildslave/buildslave/slave"
)

// Metrics are the master's Prometheus metrics. Once a Status watches the
// manager, the slave gauges are read from it at each scrape and refused
// logins are counted from its events; the master reports builds, latent
// events and mail through the methods.
type Metrics struct {
	reg             *prometheus.Registry
	refused         *prometheus.CounterVec
	buildsRunning   *prometheus.GaugeVec
	buildsFinished  *prometheus.CounterVec
	buildDuration   *prometheus.HistogramVec
	subsStarted     *prometheus.CounterVec
	subsSucceeded   *prometheus.CounterVec
	subsFailed      *prometheus.CounterVec
	subsDuration    *prometheus.HistogramVec
	instancesReaped prometheus.Counter
	mails           *prometheus.CounterVec
}

// NewMetrics makes the metrics and registers them with reg; nil means a
// new registry. A master makes them before its manager when it wants
// Notifier's counts, and gives them to New as Config.Metrics.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	durations := prometheus.ExponentialBuckets(1, 2, 14) // 1 s to about 2 h
	x := &Metrics{
		reg: reg,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildslave_logins_refused_total",
			Help: "Slave logins and attaches refused, by reason: unknown_slave, bad_password, duplicate, latent_not_substantiating or other.",
		}, []string{"reason"}),
		buildsRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "buildslave_builds_running",
			Help: "Builds running, by builder.",
		}, []string{"builder"}),
		buildsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildslave_builds_finished_total",
			Help: "Builds finished, by builder and result.",
		}, []string{"builder", "result"}),
		buildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "buildslave_build_duration_seconds",
			Help:    "How long finished builds ran, by builder.",
			Buckets: durations,
		}, []string{"builder"}),
		subsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildslave_latent_substantiations_started_total",
			Help: "Substantiations of latent slaves started, by slave.",
		}, []string{"slave"}),
		subsSucceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildslave_latent_substantiations_succeeded_total",
			Help: "Substantiations of latent slaves whose instance attached, by slave.",
		}, []string{"slave"}),
		subsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildslave_latent_substantiations_failed_total",
			Help: "Substantiations of latent slaves that failed or were abandoned, by slave.",
		}, []string{"slave"}),
		subsDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "buildslave_latent_substantiation_duration_seconds",
			Help:    "How long substantiations took, from start to attach or failure, by result: success or failure.",
			Buckets: durations,
		}, []string{"result"}),
		instancesReaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "buildslave_latent_instances_reaped_total",
			Help: "Instances left behind by an earlier run of the master that the reaper stopped.",
		}),
		mails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "buildslave_missing_mails_total",
			Help: "Missing-slave notifications, by result: sent or failed.",
		}, []string{"result"}),
	}
	reg.MustRegister(x.refused, x.buildsRunning, x.buildsFinished, x.buildDuration,
		x.subsStarted, x.subsSucceeded, x.subsFailed, x.subsDuration, x.instancesReaped, x.mails)
	return x
}

// watch registers the gauges of m's slaves.
func (x *Metrics) watch(m *slave.Manager) {
	x.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "buildslave_slaves_attached",
			Help: "Slaves attached now.",
		}, func() float64 {
			n := 0
			for _, st := range m.States() {
				if st.Attached {
					n++
				}
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "buildslave_slaves_configured",
			Help: "Slaves configured, latent ones included.",
		}, func() float64 { return float64(len(m.Slaves())) }),
	)
}

// watchLatent registers the gauge of the running instances of the
// Lifecycle lc returns at each scrape (none while it returns nil),
// labelled with kind's answer for each latent slave.
func (x *Metrics) watchLatent(lc func() *latent.Lifecycle, kind func(slave string) string) {
	x.reg.MustRegister(&instancesCollector{lc: lc, kind: kind, desc: prometheus.NewDesc(
		"buildslave_latent_instances_running",
		"Latent instances that exist now (started and not yet stopped), by driver kind: local, ec2, libvirt.",
		[]string{"kind"}, nil)})
}

// instancesCollector reads the running instances of a Lifecycle at each
// scrape. Every kind of a configured latent slave is reported, 0 when
// none of its instances runs.
type instancesCollector struct {
	lc   func() *latent.Lifecycle
	kind func(slave string) string
	desc *prometheus.Desc
}

var _ prometheus.Collector = (*instancesCollector)(nil)

func (c *instancesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *instancesCollector) Collect(ch chan<- prometheus.Metric) {
	lc := c.lc()
	if lc == nil {
		return
	}
	running := map[string]int{}
	for _, st := range lc.Statuses() {
		k := "unknown"
		if c.kind != nil {
			if s := c.kind(st.Name); s != "" {
				k = s
			}
		}
		running[k] += 0 // reported even with no instance
		if st.Instance.ID != "" {
			running[k]++
		}
	}
	for k, n := range running {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k)
	}
}

// count counts the Refused events until events is closed.
func (x *Metrics) count(events <-chan slave.Event) {
	for ev := range events {
		if ev.Kind == slave.Refused {
			x.refused.WithLabelValues(refusal(ev.Err)).Inc()
		}
	}
}

// refusal is the reason label of a refused login.
func refusal(err error) string {
	switch {
	case errors.Is(err, slave.ErrUnknownSlave):
		return "unknown_slave"
	case errors.Is(err, slave.ErrBadPassword):
		return "bad_password"
	case errors.Is(err, slave.ErrDuplicate), errors.Is(err, latent.ErrAttached):
		return "duplicate"
	case errors.Is(err, latent.ErrNotSubstantiating):
		return "latent_not_substantiating"
	}
	return "other"
}

// BuildStarted counts a build of builder as running.
func (x *Metrics) BuildStarted(builder string) {
	x.buildsRunning.WithLabelValues(builder).Inc()
}

// BuildFinished counts a running build of builder as finished with result
// (success, failure or exception) after d.
func (x *Metrics) BuildFinished(builder, result string, d time.Duration) {
	x.buildsRunning.WithLabelValues(builder).Dec()
	x.buildsFinished.WithLabelValues(builder, result).Inc()
	x.buildDuration.WithLabelValues(builder).Observe(d.Seconds())
}

// ObserveLatent counts substantiations and reaped instances; give it to
// latent.Config.Observe. A substantiation succeeds when it reaches Idle
// (the instance attached) and fails on any other way out.
func (x *Metrics) ObserveLatent(ev latent.Event) {
	switch {
	case ev.Reaped:
		x.instancesReaped.Inc()
	case ev.To == latent.Substantiating:
		x.subsStarted.WithLabelValues(ev.Slave).Inc()
	case ev.From == latent.Substantiating && ev.To == latent.Idle:
		x.subsSucceeded.WithLabelValues(ev.Slave).Inc()
		x.subsDuration.WithLabelValues("success").Observe(ev.Time.Sub(ev.Since).Seconds())
	case ev.From == latent.Substantiating:
		x.subsFailed.WithLabelValues(ev.Slave).Inc()
		x.subsDuration.WithLabelValues("failure").Observe(ev.Time.Sub(ev.Since).Seconds())
	}
}

// Notifier wraps n so that every attempt to send a missing-slave
// notification is counted as sent or failed. It returns a
// *notify.Retrying, so that the manager and the Lifecycle use it as it is:
// n's own settings if n is a *notify.Retrying, the defaults otherwise,
// with log for its lines unless n has a Logger of its own. Nil n means
// notify.Default(), as for the manager.
func (x *Metrics) Notifier(n notify.Notifier, log *slog.Logger) notify.Notifier {
	r, ok := n.(*notify.Retrying)
	if ok {
		c := *r
		r, n = &c, r.Notifier
	} else {
		r = &notify.Retrying{}
	}
	if n == nil {
		n = notify.Default()
	}
	if r.Logger == nil {
		r.Logger = log
	}
	r.Notifier = countingNotifier{n, x.mails.WithLabelValues("sent"), x.mails.WithLabelValues("failed")}
	return r
}

// countingNotifier counts what its Notifier sends and fails to send.
type countingNotifier struct {
	notify.Notifier
	sent, failed prometheus.Counter
}

var _ notify.Notifier = countingNotifier{}

func (c countingNotifier) SlaveMissing(ctx context.Context, m notify.Missing) error {
	err := c.Notifier.SlaveMissing(ctx, m)
	if err != nil {
		c.failed.Inc()
	} else {
		c.sent.Inc()
	}
	return err
}
