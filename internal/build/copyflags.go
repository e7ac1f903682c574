package build

// COPY --parents and COPY/ADD --exclude. BuildKit's Dockerfile parser (the
// version the containerd 1.7 shim library lets Lodge use) parses these
// flags only in its "labs" builds, so they are taken off each instruction's
// node before the parser sees it and kept here, by the instruction's line.

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
)

// copyExtra is what an instruction's --parents and --exclude asked for.
type copyExtra struct {
	parents bool
	exclude []string
}

// takeCopyFlags removes --parents (COPY) and --exclude (COPY, ADD) from
// the instructions of ast and returns them by the instruction's first line.
func takeCopyFlags(ast *parser.Node) (map[int]copyExtra, error) {
	out := map[int]copyExtra{}
	for _, n := range ast.Children {
		cmd := strings.ToLower(n.Value)
		if cmd != "copy" && cmd != "add" {
			continue
		}
		var x copyExtra
		var keep []string
		for _, f := range n.Flags {
			name, value, hasValue := strings.Cut(strings.TrimPrefix(f, "--"), "=")
			switch {
			case name == "parents" && cmd == "copy":
				b := true
				if hasValue {
					var err error
					if b, err = strconv.ParseBool(value); err != nil {
						return nil, fmt.Errorf("line %d: --parents=%s: want true or false", n.StartLine, value)
					}
				}
				x.parents = b
			case name == "exclude":
				if !hasValue || value == "" {
					return nil, fmt.Errorf("line %d: --exclude needs a pattern (--exclude=PATTERN)", n.StartLine)
				}
				x.exclude = append(x.exclude, value)
			default:
				keep = append(keep, f)
			}
		}
		n.Flags = keep
		if x.parents || len(x.exclude) > 0 {
			out[n.StartLine] = x
		}
	}
	return out, nil
}

// expanded is x with its patterns' variables expanded in env, as the
// instruction's other words are.
func (x copyExtra) expanded(env []string, escape rune) (copyExtra, error) {
	expand := wordExpander(env, escape)
	out := copyExtra{parents: x.parents}
	for _, p := range x.exclude {
		w, err := expand(p)
		if err != nil {
			return out, fmt.Errorf("--exclude=%s: %w", p, err)
		}
		out.exclude = append(out.exclude, w)
	}
	return out, nil
}

// excluder says whether a path below a source is left out by --exclude:
// patterns as .dockerignore's, matched against the path relative to the
// source (a source file: its name), as BuildKit does.
type excluder struct {
	pm *patternmatcher.PatternMatcher
}

func newExcluder(patterns []string) (*excluder, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("--exclude: %w", err)
	}
	return &excluder{pm}, nil
}

// out reports whether rel (relative to its source, not empty) is excluded.
func (e *excluder) out(rel string) bool {
	if e == nil || rel == "" {
		return false
	}
	ok, err := e.pm.MatchesOrParentMatches(rel)
	return err == nil && ok
}

// hasGlob reports whether p has a wildcard.
func hasGlob(p string) bool { return strings.ContainsAny(p, "*?[") }

// globSource expands pattern (absolute, clean) in s: *, ? and [...] within
// a name as path.Match has them, and ** for any number of directories.
// Matches come sorted; none is no error.
func globSource(s source, pattern string) ([]string, error) {
	var out []string
	var walk func(dir string, parts []string) error
	walk = func(dir string, parts []string) error {
		if len(parts) == 0 {
			out = append(out, dir)
			return nil
		}
		part, rest := parts[0], parts[1:]
		if part == "**" {
			if err := walk(dir, rest); err != nil { // none
				return err
			}
			isDir := func(p string) bool { fi, err := s.lstat(p); return err == nil && fi.IsDir() } // not a link to one
			return children(s, dir, isDir, func(child string) error { return walk(child, parts) })
		}
		if !hasGlob(part) {
			p := path.Join(dir, part)
			if _, err := s.lstat(p); err != nil {
				return nil
			}
			return walk(p, rest)
		}
		if _, err := path.Match(part, ""); err != nil {
			return fmt.Errorf("%s: %w", pattern, err)
		}
		return children(s, dir, func(p string) bool {
			ok, _ := path.Match(part, path.Base(p))
			return ok
		}, func(p string) error { return walk(p, rest) })
	}
	parts := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	if err := walk("/", parts); err != nil {
		return nil, err
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// children calls fn for each entry of directory dir that keep accepts
// (nothing if dir is no directory).
func children(s source, dir string, keep func(p string) bool, fn func(string) error) error {
	fi, err := s.lstat(dir)
	if err != nil || !fi.IsDir() {
		return nil
	}
	names, err := s.readDir(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if p := path.Join(dir, n); keep(p) {
			if err := fn(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// parentsKept is what --parents keeps of match, a path the source pattern
// matched: all of it (relative), or with a "/./" in the pattern only what
// follows it (the first one; a leading "./" is not one).
func parentsKept(pattern, match string) string {
	rel := strings.TrimPrefix(match, "/")
	p := strings.TrimPrefix(pattern, "./")
	i := strings.Index(p, "/./")
	if i < 0 {
		return rel
	}
	prefix := strings.Trim(path.Clean("/"+p[:i]), "/")
	if prefix == "" {
		return rel
	}
	n := strings.Count(prefix, "/") + 1
	parts := strings.Split(rel, "/")
	if n >= len(parts) {
		return ""
	}
	return strings.Join(parts[n:], "/")
}
