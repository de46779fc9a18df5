package ec2

import (
	"regexp"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestPickImage tables Buildbot's rules: among the available images whose
// location the regex matches from its start, the last by the first group
// (numerically if every group is an integer), then location, then id.
func TestPickImage(t *testing.T) {
	img := func(id, loc string) types.Image {
		return types.Image{ImageId: aws.String(id), ImageLocation: aws.String(loc), State: types.ImageStateAvailable}
	}
	pending := img("ami-pending", "b/z-99/image.manifest.xml")
	pending.State = types.ImageStatePending
	for _, tc := range []struct {
		name   string
		regex  string // "" for none
		images []types.Image
		want   string
	}{
		{"no regex: last by location", "", []types.Image{img("ami-1", "b/a"), img("ami-2", "b/c"), img("ami-3", "b/b")}, "ami-2"},
		{"no regex: same location, last by id", "", []types.Image{img("ami-2", "b/a"), img("ami-1", "b/a")}, "ami-2"},
		{"no group: by location", `b/x-.*`, []types.Image{img("ami-1", "b/x-9"), img("ami-2", "b/x-10"), img("ami-3", "b/y-99")}, "ami-1"},
		{"anchored at the start", `x-.*`, []types.Image{img("ami-1", "b/x-9")}, ""},
		{"integer group: 10 after 9", `b/x-(\d+)`, []types.Image{img("ami-1", "b/x-9"), img("ami-2", "b/x-10"), img("ami-3", "b/x-2")}, "ami-2"},
		{"integer group beats location", `[a-z]/x-(\d+)`, []types.Image{img("ami-1", "z/x-9"), img("ami-2", "a/x-10")}, "ami-2"},
		{"string group", `b/.*-(\w+)/`, []types.Image{img("ami-1", "b/a-lucid/"), img("ami-2", "b/z-karmic/"), img("ami-3", "b/m-maverick/")}, "ami-3"},
		{"string group beats location", `./(\w+)`, []types.Image{img("ami-1", "z/alpha"), img("ami-2", "a/beta")}, "ami-2"},
		{"mixed groups sort as strings", `b/x-(\w+)`, []types.Image{img("ami-1", "b/x-9"), img("ami-2", "b/x-10"), img("ami-3", "b/x-beta")}, "ami-3"},
		{"mixed: 9 after 10 as strings", `b/x-(\w+)`, []types.Image{img("ami-1", "b/x-9"), img("ami-2", "b/x-10"), img("ami-3", "b/x-1a")}, "ami-1"},
		{"only the first group counts", `b/x-(\d+)-(\d+)`, []types.Image{img("ami-1", "b/x-2-1"), img("ami-2", "b/x-1-9")}, "ami-1"},
		{"same group, then location", `b/(\d+)`, []types.Image{img("ami-1", "b/5/b"), img("ami-2", "b/5/a")}, "ami-1"},
		{"unavailable images are skipped", `b/z-(\d+)`, []types.Image{img("ami-1", "b/z-1"), pending}, "ami-1"},
		{"optional group that did not take part", `b/x(-\d+)?`, []types.Image{img("ami-1", "b/x-1"), img("ami-2", "b/x")}, "ami-1"},
		{"nothing matches", `nope`, []types.Image{img("ami-1", "b/x")}, ""},
		{"no images", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var re *regexp.Regexp
			if tc.regex != "" {
				var err error
				if re, err = compileLocationRegex(tc.regex); err != nil {
					t.Fatal(err)
				}
			}
			if got, sorted := pickImage(tc.images, re); got != tc.want {
				t.Errorf("picked %q, want %q (sorted %v)", got, tc.want, sorted)
			}
		})
	}
}
