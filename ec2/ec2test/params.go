package ec2test

import (
	"fmt"
	"net/url"
	"strconv"
)

// params reads the EC2 Query API's flattened parameters: lists are
// Name.1, Name.2, ... and structures are Name.Field.
type params url.Values

func (p params) get(key string) string { return url.Values(p).Get(key) }

func (p params) has(key string) bool { _, ok := p[key]; return ok }

// list returns prefix.1, prefix.2, ... up to the first gap.
func (p params) list(prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		k := prefix + "." + strconv.Itoa(i)
		if !p.has(k) {
			return out
		}
		out = append(out, p.get(k))
	}
}

// count returns how many prefix.N.* structures there are.
func (p params) count(prefix, field string) int {
	n := 0
	for p.has(fmt.Sprintf("%s.%d.%s", prefix, n+1, field)) {
		n++
	}
	return n
}

// filters returns Filter.N.Name → Filter.N.Value.M.
func (p params) filters() map[string][]string {
	out := map[string][]string{}
	for i := 1; i <= p.count("Filter", "Name"); i++ {
		name := p.get(fmt.Sprintf("Filter.%d.Name", i))
		out[name] = append(out[name], p.list(fmt.Sprintf("Filter.%d.Value", i))...)
	}
	return out
}

// instanceTags returns the tags TagSpecification.N gives instances.
func (p params) instanceTags() (map[string]string, *apiError) {
	tags := map[string]string{}
	for i := 1; i <= p.count("TagSpecification", "ResourceType"); i++ {
		spec := fmt.Sprintf("TagSpecification.%d", i)
		if rt := p.get(spec + ".ResourceType"); rt != "instance" {
			continue
		}
		for j := 1; j <= p.count(spec+".Tag", "Key"); j++ {
			k := p.get(fmt.Sprintf("%s.Tag.%d.Key", spec, j))
			if err := validTagKey(k); err != nil {
				return nil, err
			}
			tags[k] = p.get(fmt.Sprintf("%s.Tag.%d.Value", spec, j))
		}
	}
	return tags, nil
}
