package clustertest

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Revision is the server's current revision: each successful write (a
// put, a delete, a transaction that writes) adds one, so that the
// difference over some work is its number of etcd writes.
func (s *Server) Revision() int64 { return s.etcd.Server.KV().Rev() }

// Received is how many requests and stream messages (lease keepalives,
// watch requests) the server has received, from its
// grpc_server_msg_received_total metrics: the difference over an idle
// spell is the clients' idle traffic.
func (s *Server) Received(t testing.TB) int64 {
	t.Helper()
	resp, err := http.Get(s.Endpoints[0] + "/metrics")
	if err != nil {
		t.Fatalf("clustertest: etcd metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_msg_received_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("clustertest: etcd metrics: %q: %v", line, err)
		}
		sum += int64(v)
	}
	if sum == 0 {
		t.Fatal("clustertest: etcd's /metrics has no grpc_server_msg_received_total")
	}
	return sum
}
