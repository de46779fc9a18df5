package builds

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/buildslave/buildslave/client"
	"github.com/buildslave/buildslave/internal/testlog"
	"github.com/buildslave/buildslave/protocol"
	"github.com/buildslave/buildslave/slave"
)

// goSlave is a Runner whose builder "b" runs steps on our Go slave,
// attached in-process over a real protocol connection on loopback.
type goSlave struct {
	r       *Runner
	log     *testlog.Buffer // the Runner's log
	workdir string          // the slave's directory of builder b
}

// newGoSlave attaches a Go slave and returns a Runner of builder b with
// steps on it; cfg's Manager, History and Logger are filled in.
func newGoSlave(t *testing.T, cfg Config, steps ...Step) *goSlave {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	s1, err := slave.New("s1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	m, err := slave.NewManager(slave.Config{Logger: quiet}, s1)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &protocol.Server{Handler: &protocol.Handler{Manager: m, Builders: []string{"b"}, Logger: quiet}}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	basedir := t.TempDir()
	gs, err := client.New(client.Config{Master: "ws://" + ln.Addr().String() + "/", Name: "s1", Password: "pw", Basedir: basedir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); gs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
		<-served
		m.Close()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if st, _ := m.State("s1"); st.Attached {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Go slave did not attach in 10 s")
		}
	}
	g := &goSlave{log: &testlog.Buffer{}, workdir: basedir + "/b/build"}
	cfg.Manager, cfg.Logger = m, slog.New(slog.NewTextHandler(g.log, nil))
	if cfg.History == nil {
		cfg.History = NewHistory(0, 0)
	}
	g.r = NewRunner(cfg)
	g.r.SetBuilders([]Builder{{Name: "b", Slaves: []string{"s1"}, Steps: steps}})
	return g
}

// build forces a build of b, waits for it and returns its record.
func (g *goSlave) build(t *testing.T) (string, []stepView) {
	t.Helper()
	h, err := g.r.Force("b", "test")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the build did not end in 30 s")
	}
	var steps []stepView
	for _, s := range g.r.cfg.History.Recent(1)[0].Steps {
		steps = append(steps, stepView{s.Name, s.State, s.Output})
	}
	return h.State(), steps
}

// stepView is what a test checks of a step.
type stepView struct{ name, state, output string }
