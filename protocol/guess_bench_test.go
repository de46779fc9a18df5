package protocol

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/buildslave/buildslave/protocol/wire"
	"github.com/buildslave/buildslave/slave"
)

// BenchmarkPasswordGuessing is an attack on a Server with the default
// limits: guessers send logins with wrong passwords as fast as the master
// answers, on keep-alive connections where it allows them, from one
// loopback address (8 guessers) or from 100 (one each). It reports the
// logins answered per second and the guesses per second, the logins
// whose password was checked (answered 401 rather than 429). Run it for
// a while, as the budget of each address refills with time:
//
//	go test ./protocol -run '^$' -bench PasswordGuessing -benchtime 10s
func BenchmarkPasswordGuessing(b *testing.B) {
	for _, addrs := range []int{1, 100} {
		b.Run(fmt.Sprintf("addresses=%d", addrs), func(b *testing.B) {
			s1, _ := slave.New("s1", "pw")
			m, err := slave.NewManager(slave.Config{Logger: slog.New(slog.DiscardHandler)}, s1)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			addr := startServer(b, &Server{Handler: &Handler{Manager: m, Logger: slog.New(slog.DiscardHandler)}})
			url := "http://" + addr.String() + "/"

			guessers := max(addrs, 8)
			var next, checked, other atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := range guessers {
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(1+g%addrs))}}
				client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1}}
				defer client.CloseIdleConnections()
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						req, _ := http.NewRequest("GET", url, nil)
						req.Header.Set("Authorization", wire.BasicAuth("s1", fmt.Sprint("guess", i)))
						resp, err := client.Do(req)
						if err != nil {
							other.Add(1)
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						switch resp.StatusCode {
						case http.StatusUnauthorized:
							checked.Add(1)
						case http.StatusTooManyRequests:
						default:
							other.Add(1)
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N)/elapsed, "logins/s")
			b.ReportMetric(float64(checked.Load())/elapsed, "guesses/s")
			b.ReportMetric(float64(checked.Load()), "guesses")
			b.ReportMetric(float64(other.Load()), "errors")
			b.ReportMetric(0, "ns/op")
		})
	}
}
