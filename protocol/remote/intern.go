package remote

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// maxShared bounds how many distinct maps the interner keeps, so that
// slaves reporting ever new values cannot grow it without limit.
const maxShared = 256

// shared holds one copy of each distinct info map the slaves reported:
// the slaves of one master mostly report the same commands and OS, so
// 10,000 of them share a handful of maps instead of holding 10,000 each.
var shared = interner{maps: make(map[string]map[string]string)}

type interner struct {
	mu   sync.Mutex
	maps map[string]map[string]string
}

// intern returns a map equal to m that may be shared: the caller must
// never modify either afterwards.
func (in *interner) intern(m map[string]string) map[string]string {
	var key strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		// Length-prefixed, so no two different maps share a key.
		fmt.Fprintf(&key, "%d:%s%d:%s", len(k), k, len(m[k]), m[k])
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.maps[key.String()]; ok {
		return s
	}
	if len(in.maps) < maxShared {
		in.maps[key.String()] = m
	}
	return m
}
