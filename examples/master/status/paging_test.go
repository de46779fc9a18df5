package status_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/buildslave/buildslave/examples/master/status"
	"github.com/buildslave/buildslave/latent/latenttest"
)

// TestBuildsArePaged: the page and the JSON show DefaultPageBuilds builds
// at a time, with the way to the older ones.
func TestBuildsArePaged(t *testing.T) {
	f := newFixture(t, latenttest.Boot{}, &recorder{})
	for id := 1; id <= 45; id++ {
		f.builds.put(status.Build{ID: id, Builder: "hello", State: "success", Reason: strings.Repeat("r", 100)})
	}
	h := f.st.Handler()
	var ids []int
	for before, page := "", 0; page < 10; page++ {
		var snap status.Snapshot
		if err := json.Unmarshal(get(t, h, "/api/status"+before).Body.Bytes(), &snap); err != nil {
			t.Fatal(err)
		}
		if len(snap.Builds) > status.DefaultPageBuilds {
			t.Fatalf("a page of %d builds", len(snap.Builds))
		}
		for _, b := range snap.Builds {
			ids = append(ids, b.ID)
		}
		if snap.Older == 0 {
			break
		}
		before = "?before=" + strconv.Itoa(snap.Older)
	}
	if len(ids) != 45 || ids[0] != 45 || ids[44] != 1 || ids[status.DefaultPageBuilds] != 45-status.DefaultPageBuilds {
		t.Errorf("paged through builds %v", ids)
	}

	page := get(t, h, "/").Body.String()
	if strings.Count(page, `<tr id="build-`) != status.DefaultPageBuilds || !strings.Contains(page, `href="?before=`+strconv.Itoa(46-status.DefaultPageBuilds)+`"`) {
		t.Errorf("the page lacks its %d builds or its link to older ones", status.DefaultPageBuilds)
	}
	last := get(t, h, "/?before=3").Body.String()
	if strings.Count(last, `<tr id="build-`) != 2 || strings.Contains(last, `?before=`) || !strings.Contains(last, `href="./"`) {
		t.Errorf("the last page:\n%s", last)
	}
	for _, bad := range []string{"/?before=x", "/api/status?before=-1"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, bad, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", bad, rec.Code)
		}
	}
}
