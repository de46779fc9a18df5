package ec2

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

var errNoImage = errors.New("no available image matches valid_ami_owners and valid_ami_location_regex")

// image returns the AMI to start: the fixed one, or the one the filters
// pick among the available images. Concurrent starts share one look-up.
func (s *Slave) image(ctx context.Context) (string, error) {
	if s.settings.ami != "" {
		return s.settings.ami, nil
	}
	in := &awsec2.DescribeImagesInput{
		Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"available"}}},
	}
	for _, o := range s.settings.validAMIOwners {
		in.Owners = append(in.Owners, strconv.FormatInt(o, 10))
	}
	key := "images " + strings.Join(in.Owners, ",")
	v, err, _ := s.client.flight.Do(key, func() (any, error) {
		var images []types.Image
		for p := awsec2.NewDescribeImagesPaginator(s.client.api, in); p.HasMorePages(); {
			out, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			images = append(images, out.Images...)
		}
		return images, nil
	})
	if err != nil {
		return "", fmt.Errorf("describe images: %w", err)
	}
	id, sorted := pickImage(v.([]types.Image), s.regex)
	if id == "" {
		return "", errNoImage
	}
	s.log.Debug("ec2: sorted images (last is chosen)", "images", sorted)
	return id, nil
}

// compileLocationRegex compiles valid_ami_location_regex to match from the
// start of the location only, as Python's re.match does.
func compileLocationRegex(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)`)
}

// candidate is an image with its sort keys, following Buildbot: by the
// regex's first group as an integer (if every candidate's is one), else as
// a string (if the regex has a group), then by location, then by id.
type candidate struct {
	num      int64
	group    string
	location string
	id       string
}

// pickImage returns the id of the available image that sorts last, and
// the sorted candidates for the log. re, if not nil, must match the
// image's location from its start.
func pickImage(images []types.Image, re *regexp.Regexp) (id string, sorted []string) {
	var cands []candidate
	numeric, grouped := re != nil && re.NumSubexp() > 0, re != nil && re.NumSubexp() > 0
	for _, img := range images {
		loc := aws.ToString(img.ImageLocation)
		if img.State != types.ImageStateAvailable {
			continue
		}
		c := candidate{location: loc, id: aws.ToString(img.ImageId)}
		if re != nil {
			m := re.FindStringSubmatch(loc)
			if m == nil {
				continue
			}
			if grouped {
				c.group = m[1]
				n, err := strconv.ParseInt(c.group, 10, 64)
				numeric = numeric && err == nil
				c.num = n
			}
		}
		cands = append(cands, c)
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if numeric {
			if c := cmp.Compare(a.num, b.num); c != 0 {
				return c
			}
		}
		return cmp.Or(strings.Compare(a.group, b.group), strings.Compare(a.location, b.location), strings.Compare(a.id, b.id))
	})
	for _, c := range cands {
		sorted = append(sorted, c.id+" ("+c.location+")")
	}
	if len(cands) == 0 {
		return "", sorted
	}
	return cands[len(cands)-1].id, sorted
}
