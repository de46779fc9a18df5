package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/slave"
	"github.com/buildslave/buildslave/slave/slavetest"
)

// The JSON of a master with one attached slave and one that never came.
func Example() {
	linux, _ := slave.New("bot-linux", "linuxpassword", slave.MaxBuilds(2))
	bsd, _ := slave.New("bot-bsd", "bsdpassword")
	m, _ := slave.NewManager(slave.Config{Logger: quiet}, linux, bsd)
	defer m.Close()
	st := status.New(status.Config{Manager: m, Builders: func() []string { return []string{"hello"} }, ForcePath: "/force"})
	defer st.Close()
	if err := m.Attach(context.Background(), "bot-linux", slavetest.NewConn(slave.Info{Admin: "Jane <jane@example.org>"})); err != nil {
		fmt.Println(err)
		return
	}

	srv := httptest.NewServer(st.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/status")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var snap status.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range snap.Slaves {
		fmt.Printf("%s: %s, %d of %d builds, admin %q\n", s.Name, s.State, s.Running, s.MaxBuilds, s.Info.Admin)
	}
	// Output:
	// bot-bsd: never attached, 0 of 0 builds, admin ""
	// bot-linux: attached, 0 of 2 builds, admin "Jane <jane@example.org>"
}

// The metrics come first when the manager's notifier and a Lifecycle's
// Observe are to feed them; the Status then adds the slave gauges.
func ExampleNewMetrics() {
	metrics := status.NewMetrics(nil)
	bot, _ := slave.New("bot-linux", "linuxpassword")
	m, _ := slave.NewManager(slave.Config{Logger: quiet, Notifier: metrics.Notifier(nil, quiet)}, bot)
	defer m.Close()
	// latent.New(m, latent.Config{Observe: metrics.ObserveLatent, ...}) would go here.
	st := status.New(status.Config{Manager: m, Metrics: metrics})
	defer st.Close()

	metrics.BuildStarted("hello")
	metrics.BuildFinished("hello", "success", 90*time.Second)

	rec := httptest.NewRecorder()
	st.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "buildslave_builds_") || strings.HasPrefix(line, "buildslave_slaves_") {
			fmt.Println(line)
		}
	}
	// Output:
	// buildslave_builds_finished_total{builder="hello",result="success"} 1
	// buildslave_builds_running{builder="hello"} 0
	// buildslave_slaves_attached 0
	// buildslave_slaves_configured 1
}
