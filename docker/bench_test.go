package docker

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/buildslave/buildslave/docker/dockertest"
	"github.com/buildslave/buildslave/latent"
	"github.com/buildslave/buildslave/protocol/pb"
	"github.com/buildslave/buildslave/slave"
)

// BenchmarkSubstantiate measures a Docker latent slave's whole cycle on
// the host network: a build asks, the container is created and started,
// the Go slave in it attaches over PB, the build releases it and the
// container is removed (build_wait_timeout 0). It reports the p50 of
// "asked → attached" besides the cycle's time.
//
//	go test -run XXX -bench Substantiate ./docker/
func BenchmarkSubstantiate(b *testing.B) {
	needImage(b, dockertest.Client(b))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	d, err := New("bench", "unused", dockertest.Host(), Image(testImage), Logger(quiet), MasterFQDN(l.Addr().String()),
		WithHostConfig(HostConfig{NetworkMode: "host"}))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	m, err := slave.NewManager(slave.Config{Logger: quiet}, d.Slave())
	if err != nil {
		b.Fatal(err)
	}
	srv := &pb.Server{Manager: m, Logger: quiet}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() { srv.Close(); <-served; m.Close() }()
	masterID := "bench-" + rand.Text()[:8]
	lc, err := latent.New(m, latent.Config{MasterID: masterID, CheckInterval: 200 * time.Millisecond, ReapInterval: -1, Logger: quiet}, d)
	if err != nil {
		b.Fatal(err)
	}
	defer lc.Close()
	ctx := context.Background()
	var attach []time.Duration
	for b.Loop() {
		t0 := time.Now()
		build, err := m.Acquire(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		attach = append(attach, time.Since(t0))
		build.Release()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
			if st, _ := lc.Status("bench"); st.State == latent.Stopped {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("the container was not stopped")
			}
		}
	}
	slices.Sort(attach)
	b.ReportMetric(float64(attach[len(attach)/2].Microseconds())/1000, "ms-to-attach-p50")
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := lc.Shutdown(sctx); err != nil {
		b.Fatal(err)
	}
}
