package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/buildslave/buildslave/internal/integration"
)

// chromiumTab is a tab of headless Chromium driven over the DevTools
// protocol, for what loading a page cannot show: clicking its buttons.
type chromiumTab struct {
	t       *testing.T
	ws      *websocket.Conn
	session string
	nextID  int
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// newChromiumTab starts Chromium (skipping t as integration.Require does
// without it) and opens url in a tab; both end with the test.
func newChromiumTab(t *testing.T, url string) *chromiumTab {
	t.Helper()
	bin := integration.Require(t, "chromium")
	dir := t.TempDir()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--remote-debugging-port=0", "--user-data-dir="+filepath.Join(dir, "profile"), "about:blank")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	found := make(chan string, 1)
	go func() { // ends when Chromium does: the cleanup kills it
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := devtoolsRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	var endpoint string
	select {
	case endpoint = <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("Chromium did not open its DevTools endpoint in 30 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, endpoint, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	tab := &chromiumTab{t: t, ws: ws}
	var target struct{ TargetID string }
	tab.call("Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct{ SessionID string }
	tab.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	tab.session = attached.SessionID
	tab.navigate(url)
	for deadline := time.Now().Add(30 * time.Second); !tab.loaded(url); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Chromium did not load %s in 30 s", url)
		}
	}
	return tab
}

// call sends a DevTools command and decodes its result into result.
func (c *chromiumTab) call(method string, params map[string]any, result any) {
	c.t.Helper()
	if err := c.try(method, params, result); err != nil {
		c.t.Fatal(err)
	}
}

// try is call that returns its error: a page that navigates away during
// an evaluation fails it.
func (c *chromiumTab) try(method string, params map[string]any, result any) error {
	c.nextID++
	msg := map[string]any{"id": c.nextID, "method": method, "params": params}
	if c.session != "" {
		msg["sessionId"] = c.session
	}
	c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.ws.WriteJSON(msg); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	c.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var reply struct {
			ID     int
			Result json.RawMessage
			Error  *struct{ Message string }
		}
		if err := c.ws.ReadJSON(&reply); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		switch {
		case reply.ID != c.nextID:
			continue // an event, or the answer to an earlier call
		case reply.Error != nil:
			return fmt.Errorf("%s: %s", method, reply.Error.Message)
		case result != nil:
			return json.Unmarshal(reply.Result, result)
		}
		return nil
	}
}

// navigate starts loading url in the tab.
func (c *chromiumTab) navigate(url string) {
	c.t.Helper()
	c.call("Page.navigate", map[string]any{"url": url}, nil)
}

// eval evaluates a JavaScript expression in the page, as DevTools'
// console does, and returns its value as JSON, or "" if it failed (the
// page navigated away meanwhile, or the expression threw).
func (c *chromiumTab) eval(expr string) string {
	c.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage
		}
		ExceptionDetails *struct{ Text string }
	}
	if err := c.try("Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true}, &res); err != nil || res.ExceptionDetails != nil {
		return ""
	}
	return string(res.Result.Value)
}

// loaded reports whether the tab shows url, loaded.
func (c *chromiumTab) loaded(url string) bool {
	return c.eval(`location.href`) == `"`+url+`"` && c.eval(`document.readyState`) == `"complete"`
}
