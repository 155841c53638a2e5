package ship

import (
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
)

// ParseLabels turns repeated "k=v" flag values into a label map.
func ParseLabels(kvs []string) (map[string]string, error) {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want name=value", kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// maxSiteLen keeps a derived site short enough for subjects, object names and logs.
const maxSiteLen = 64

// SiteFromLabels derives a site name from external labels when none is configured: the
// sorted pairs as "name-value" joined by "_", with every character other than ASCII
// letters, digits, '-' and '_' replaced by '-' (a site is a NATS subject token and a
// staging name prefix, so '.', '*', '>', '/' and spaces are out). {cluster="eu-1",
// replica="a"} gives "cluster-eu-1_replica-a". A longer result is cut and suffixed with a
// hash of the whole, so distinct label sets stay distinct.
func SiteFromLabels(lbls map[string]string) string {
	pairs := make([]string, 0, len(lbls))
	h := fnv.New64a()
	for _, k := range slices.Sorted(maps.Keys(lbls)) {
		pairs = append(pairs, sanitize(k)+"-"+sanitize(lbls[k]))
		fmt.Fprintf(h, "%s=%s\x00", k, lbls[k])
	}
	site := strings.Join(pairs, "_")
	if len(site) <= maxSiteLen {
		return site
	}
	return fmt.Sprintf("%s-%016x", site[:maxSiteLen-17], h.Sum64())
}

// CheckSite reports whether site can be used as is: non-empty, at most 64 characters,
// only ASCII letters, digits, '-' and '_'.
func CheckSite(site string) error {
	switch {
	case site == "":
		return errors.New("site is empty")
	case len(site) > maxSiteLen:
		return fmt.Errorf("site %q is longer than %d characters", site, maxSiteLen)
	case sanitize(site) != site:
		return fmt.Errorf("site %q: use only ASCII letters, digits, '-' and '_'", site)
	}
	return nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, s)
}
