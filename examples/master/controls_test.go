package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/buildslave/buildslave/examples/master/internal/builds"
	"github.com/buildslave/buildslave/examples/master/status"
)

// apiPost POSTs to the master's web port as curl would, accepting JSON.
func apiPost(t *testing.T, m *master, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+m.webAddr+path, nil)
	req.Header = header
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// metricsText scrapes the master's /metrics.
func metricsText(t *testing.T, m *master) string {
	t.Helper()
	resp, err := http.Get("http://" + m.webAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestOperatorControls pauses a latent slave with a reason through the
// real master's web port, which holds a forced build until it is
// unpaused; another site's POST is refused; the gauge of running latent
// instances counts the local one.
func TestOperatorControls(t *testing.T) {
	m, out := startMaster(t, testConfig(t, localLatent))
	if text := metricsText(t, m); !strings.Contains(text, "\n"+`buildslave_latent_instances_running{kind="local"} 0`+"\n") {
		t.Errorf("metrics before any build lack the local gauge at 0:\n%s", text)
	}
	if _, err := m.runner.Force("b", "first"); err != nil {
		t.Fatal(err)
	}
	lastBuild(t, m, builds.Success)
	if text := metricsText(t, m); !strings.Contains(text, "\n"+`buildslave_latent_instances_running{kind="local"} 1`+"\n") {
		t.Errorf("metrics with l1 running lack the local gauge at 1:\n%s", text)
	}

	// Another site cannot pause it through the operator's browser.
	resp, body := apiPost(t, m, "/slaves/l1/pause", http.Header{"Origin": {"http://evil.example"}, "Sec-Fetch-Site": {"cross-site"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site pause: %s %s", resp.Status, body)
	}
	if st, _ := m.mgr.State("l1"); st.Paused {
		t.Fatal("a cross-site POST paused l1")
	}

	resp, body = apiPost(t, m, "/slaves/l1/pause?reason="+url.QueryEscape("disk full"), http.Header{})
	var row status.Slave
	if err := json.Unmarshal([]byte(body), &row); resp.StatusCode != http.StatusOK || err != nil || row.State != "paused" || row.Pause == nil || row.Pause.Reason != "disk full" {
		t.Fatalf("pause: %s %s", resp.Status, body)
	}
	if _, err := m.runner.Force("b", "while paused"); err != nil {
		t.Fatal(err)
	}
	lastBuild(t, m, builds.Waiting)
	if resp, body := apiPost(t, m, "/slaves/l1/unpause", http.Header{}); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"paused":false`) {
		t.Fatalf("unpause: %s %s", resp.Status, body)
	}
	lastBuild(t, m, builds.Success)
	if err := m.shutdown(10*time.Second, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	assertProcessesGone(t, out.String())
}
