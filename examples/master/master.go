package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/internal/config"
	"github.com/buildslave/buildslave/examples/master/internal/limit"
	"github.com/buildslave/buildslave/examples/master/internal/termsafe"
	"github.com/buildslave/buildslave/examples/master/internal/web"
	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/protocol/budget"
	"github.com/buildslave/buildslave/protocol/connlimit"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// forcePath is where the status page's buttons and scripts force builds.
const forcePath = "/force"

// master is a running master: the library's manager and lifecycle, the
// protocol and web servers, and the builds.
type master struct {
	log      *slog.Logger
	progress func(format string, args ...any)

	mu      sync.Mutex                    // guards cfg, latents, drivers and lc
	cfg     *config.Config                // the configuration applied last
	latents map[string]latent.LatentSlave // the driver of each latent slave, by name
	drivers []latent.LatentSlave          // every driver built, closed at shutdown
	lc      *latent.Lifecycle             // nil until there is a latent slave: see startLifecycle

	mgr       *slave.Manager
	latentCfg latent.Config    // the Lifecycle's Logger, Notifier and Observe
	driverEnv config.DriverEnv // what a reload builds new drivers with
	status    *status.Status
	history   *builds.History
	runner    *builds.Runner
	scheds    *builds.Schedulers
	atStart   []*builds.Handle
	latentC   chan struct{} // signalled at every latent event

	pb        *pb.Server
	pbAddr    string // where PB slaves dial (local latent slaves too)
	proto     *protocol.Server
	protoAddr string // where msgpack slaves dial
	web       *http.Server
	guard     *web.Guard     // the web port's checks
	webAddr   string         // where to dial the web port from this host
	webBound  string         // where it listens
	wg        sync.WaitGroup // the servers and the progress reader
	events    func()         // ends the manager subscription of progress lines
	cluster   *clustered     // nil without [cluster]: this master is alone
}

// start builds and starts a master on cfg. Progress lines go to out; the
// local latent slaves' output goes to slaveOut.
func start(cfg *config.Config, log *slog.Logger, out, slaveOut io.Writer) (_ *master, err error) {
	m := &master{cfg: cfg, log: log, latentC: make(chan struct{}, 1), latents: make(map[string]latent.LatentSlave),
		progress: func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", escapeArgs(args)...) }}
	var cleanup []func()
	defer func() {
		if err != nil {
			for _, f := range cleanup {
				f()
			}
		}
	}()
	pbLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("master.listen: %w", err)
	}
	cleanup = append(cleanup, func() { pbLn.Close() })
	protoLn, err := net.Listen("tcp", cfg.ListenMsgpack)
	if err != nil {
		return nil, fmt.Errorf("master.listen_msgpack: %w", err)
	}
	cleanup = append(cleanup, func() { protoLn.Close() })
	webLn, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("master.http: %w", err)
	}
	cleanup = append(cleanup, func() { webLn.Close() })
	m.webBound = webLn.Addr().String()
	if !cfg.Web.Authenticated() && !cfg.HTTPAllowUnauthenticated && !webLn.Addr().(*net.TCPAddr).IP.IsLoopback() {
		return nil, fmt.Errorf("master.http: %s is reachable from other hosts, without authentication: set http_token_file or http_basic_auth_file, or http_allow_unauthenticated = true", m.webBound)
	}
	m.pbAddr, m.protoAddr, m.webAddr = dialable(pbLn.Addr()), dialable(protoLn.Addr()), dialable(webLn.Addr())
	if err := m.joinCluster(); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, m.leaveCluster)

	metrics := status.NewMetrics(nil)
	notifier := metrics.Notifier(cfg.Manager.Notifier, log)
	slaves := append([]*slave.Slave(nil), cfg.Slaves...)
	m.driverEnv = config.DriverEnv{Master: m.pbAddr, MasterMsgpack: m.protoAddr, Output: slaveOut, Logger: log}
	for _, l := range cfg.Latents {
		d, err := l.Driver(m.driverEnv)
		if err != nil {
			return nil, fmt.Errorf("latent slave %s: %w", l.Name, err)
		}
		m.drivers = append(m.drivers, d)
		m.latents[l.Name] = d
	}
	cleanup = append(cleanup, m.closeDrivers)
	mcfg := cfg.Manager
	mcfg.Logger, mcfg.Notifier = log, notifier
	if m.cluster != nil {
		mcfg.Gate = m.cluster.member // one owner per slave name cluster-wide
	}
	if m.mgr, err = slave.NewManager(mcfg, slaves...); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { m.mgr.Close() })
	m.latentCfg = latent.Config{Logger: log, Notifier: notifier, Observe: func(ev latent.Event) {
		metrics.ObserveLatent(ev)
		m.latentProgress(ev)
		select {
		case m.latentC <- struct{}{}:
		default:
		}
	}}
	if len(m.drivers) > 0 {
		if err := m.startLifecycle(cfg, m.drivers); err != nil {
			return nil, err
		}
	}

	hist := builds.NewHistory(cfg.History, cfg.StepOutput)
	m.history = hist
	limits := limit.New(log)
	m.runner = builds.NewRunner(builds.Config{Manager: m.mgr, History: hist, Metrics: metrics, Logger: log, Progress: m.progress,
		UploadDir: filepath.Join(cfg.Basedir, "uploads", time.Now().Format("20060102-150405")),
		Limits:    cfg.BuildLimits, LimitLog: limits})
	m.runner.SetBuilders(cfg.Builders)
	m.scheds = builds.NewSchedulers(m.runner, log)
	m.clusterSchedulers()
	wcfg := cfg.Web
	wcfg.Limits, wcfg.Logger = limits, log
	m.guard = web.New(wcfg)
	m.status = status.New(status.Config{Manager: m.mgr, Lifecycle: m.lifecycle, Builds: hist, Builders: m.runner.Builders,
		PageBuilds: cfg.PageBuilds, ForcePath: forcePath, FormToken: m.guard.Token, Metrics: metrics, Logger: log,
		LatentKind: m.latentKind, MaxReasonLength: cfg.BuildLimits.MaxReasonLength, Limits: limits, Cluster: m.clusterView()})
	mux := http.NewServeMux()
	mux.Handle(forcePath, builds.ForceHandler(m.force))
	mux.Handle("/", m.status.Handler())
	m.web = m.guard.Server(mux, slog.NewLogLogger(log.Handler(), slog.LevelWarn))
	// Both transports share one cap on connections before login (they
	// share one file limit) and one memory budget for their messages.
	lim := &connlimit.Limiter{Logger: log}
	mem := budget.New(cfg.MessageMemory, 0)
	m.pb = &pb.Server{Manager: m.mgr, Builders: m.runner.Builders(), AttachTimeout: cfg.AttachTimeout, Limiter: lim, Logger: log,
		Broker: pb.BrokerConfig{Budget: mem}}
	m.proto = &protocol.Server{TLSConfig: cfg.TLS, Limiter: lim, Handler: &protocol.Handler{Manager: m.mgr, Builders: m.runner.Builders(),
		AttachTimeout: cfg.AttachTimeout, Logger: log, WebSocket: wire.WebSocketConfig{Budget: mem}}}

	events, cancel := m.mgr.Subscribe()
	m.events = cancel
	m.wg.Go(func() { m.slaveProgress(events) })
	m.wg.Go(func() { m.serve("web", m.web.Serve(m.guard.Listener(webLn))) })
	m.wg.Go(func() { m.serve("Perspective Broker", m.pb.Serve(pbLn)) })
	m.wg.Go(func() { m.serve("msgpack", m.proto.Serve(protoLn)) })
	m.runCluster()
	m.banner()
	m.atStart = m.scheds.Start(cfg.Schedules)
	return m, nil
}

// escapeArgs escapes the text among a progress line's arguments, which
// may come from slaves: no control character reaches the terminal.
func escapeArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = termsafe.Escape(v)
		case error:
			out[i] = termsafe.Escape(v.Error())
		case fmt.Stringer:
			out[i] = termsafe.Escape(v.String())
		default:
			out[i] = a
		}
	}
	return out
}

// serve logs why a server stopped, unless it was shut down.
func (m *master) serve(what string, err error) {
	if !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, pb.ErrServerClosed) {
		m.log.Error(what+" server stopped", "err", err)
	}
}

// dialable is an address to dial for a listener's address: loopback for
// one that listens on every interface.
func dialable(a net.Addr) string {
	tcp := a.(*net.TCPAddr)
	if tcp.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
	}
	return tcp.String()
}

// closeDrivers closes the drivers that hold a connection (libvirt),
// those a reload replaced included.
func (m *master) closeDrivers() {
	m.mu.Lock()
	drivers := m.drivers
	m.mu.Unlock()
	for _, d := range drivers {
		closeDriver(d)
	}
}

// closeDriver closes d if it holds a connection (libvirt).
func closeDriver(d latent.LatentSlave) {
	if c, ok := d.(io.Closer); ok {
		_ = c.Close() // nothing left to do with the error
	}
}

// startLifecycle creates the master's Lifecycle over drivers, with cfg's
// [master] settings (and the cluster's Starter): at start when there are
// latent slaves, else at the reload that adds the first.
func (m *master) startLifecycle(cfg *config.Config, drivers []latent.LatentSlave) error {
	m.clusterLifecycle(cfg)
	lcfg := cfg.Lifecycle
	lcfg.Logger, lcfg.Notifier, lcfg.Observe = m.latentCfg.Logger, m.latentCfg.Notifier, m.latentCfg.Observe
	lc, err := latent.New(m.mgr, lcfg, drivers...)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.lc = lc
	m.mu.Unlock()
	return nil
}

// lifecycle returns the master's Lifecycle, nil while it has had no
// latent slave.
func (m *master) lifecycle() *latent.Lifecycle {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lc
}

// config returns the configuration applied last.
func (m *master) config() *config.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// scheme is ws, or wss with TLS.
func (m *master) scheme() string {
	if m.config().TLS != nil {
		return "wss"
	}
	return "ws"
}
