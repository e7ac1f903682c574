package cli

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lodgeruntime/lodge/internal/image"
)

// imageFilter says which images `lodge images` lists: docker's
// REPOSITORY[:TAG] argument and --filter dangling=, reference=, label=,
// before= and since= (each key's values or-ed, the keys and-ed, as
// docker's).
type imageFilter struct {
	refs          []string // patterns of REPOSITORY[:TAG]
	dangling      *bool
	labels        []string // KEY or KEY=VALUE
	before, since time.Time
}

// parseImageFilter reads the argument and the --filter values; find
// looks an image up by name, for before= and since=.
func parseImageFilter(arg string, filters []string, find func(string) (*image.Image, error)) (imageFilter, error) {
	var f imageFilter
	if arg != "" {
		f.refs = append(f.refs, arg)
	}
	for _, v := range filters {
		key, val, ok := strings.Cut(v, "=")
		if !ok {
			return f, fmt.Errorf("--filter %q: want KEY=VALUE", v)
		}
		switch key {
		case "dangling":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return f, fmt.Errorf("--filter %s: want true or false", v)
			}
			f.dangling = &b
		case "reference":
			if _, err := path.Match(val, ""); err != nil {
				return f, fmt.Errorf("--filter %s: %w", v, err)
			}
			f.refs = append(f.refs, val)
		case "label":
			f.labels = append(f.labels, val)
		case "before", "since":
			im, err := find(val)
			if err != nil {
				return f, fmt.Errorf("--filter %s: %w", v, err)
			}
			if key == "before" {
				f.before = im.Config.Created.Time
			} else {
				f.since = im.Config.Created.Time
			}
		default:
			return f, fmt.Errorf("--filter %q: want dangling, reference, label, before or since", v)
		}
	}
	return f, nil
}

// match says whether the image listed as repo and tag passes.
func (f imageFilter) match(repo, tag string, im *image.Image) bool {
	dangling := repo == "<none>" || tag == "<none>"
	if f.dangling != nil && *f.dangling != dangling {
		return false
	}
	if len(f.refs) > 0 && !slices.ContainsFunc(f.refs, func(p string) bool { return refMatches(p, repo, tag) }) {
		return false
	}
	labels := im.Config.Config.Labels
	for _, l := range f.labels {
		k, v, hasValue := strings.Cut(l, "=")
		if got, ok := labels[k]; !ok || hasValue && got != v {
			return false
		}
	}
	created := im.Config.Created.Time
	if !f.before.IsZero() && !created.Before(f.before) || !f.since.IsZero() && !created.After(f.since) {
		return false
	}
	return true
}

// refMatches matches REPOSITORY[:TAG] (globs, as docker's reference
// filter) against an image's repository (as listed: docker.io's short)
// and tag; a pattern without a tag matches every tag. As docker's, app
// is not 127.0.0.1:5000/team/app: a script that removes what it lists
// must not reach another registry's image.
func refMatches(pattern, repo, tag string) bool {
	pr, pt := pattern, ""
	if i := strings.LastIndex(pattern, ":"); i > strings.LastIndex(pattern, "/") {
		pr, pt = pattern[:i], pattern[i+1:]
	}
	if pt != "" {
		if ok, _ := path.Match(pt, tag); !ok {
			return false
		}
	}
	ok, _ := path.Match(pr, repo)
	return ok
}
