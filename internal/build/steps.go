package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/util/gitutil"

	"github.com/lodgeruntime/lodge/internal/imagefs"
)

// step runs one instruction of a stage.
func (bd *build) step(ctx context.Context, st *stage, c instructions.Command) error {
	if err := expand(c, st.env(), '\\'); err != nil {
		return err
	}
	if a, ok := c.(*instructions.ArgCommand); ok {
		for _, kv := range a.Args {
			def := kv.Value
			if def == nil {
				if g, ok := bd.global[kv.Key]; ok {
					def = &g
				}
			}
			st.args[kv.Key] = bd.argValue(kv.Key, def) // a default was expanded with the instruction
		}
		return nil
	}
	switch c := c.(type) {
	case *instructions.WorkdirCommand:
		st.workdir = st.absPath(c.Path)
	case *instructions.ShellCommand:
		st.shell = c.Shell
	}
	switch c := c.(type) {
	case *instructions.RunCommand:
		return bd.run(ctx, st, c)
	case *instructions.CopyCommand:
		x, err := bd.copyExtra(st, c.Location())
		if err != nil {
			return err
		}
		// --link changes how BuildKit stores the layer, not the files in
		// it: a layer here never depends on the files below it.
		return bd.copy(ctx, st, c.SourcesAndDest, copyFlags{from: c.From, chown: c.Chown, chmod: c.Chmod,
			createdBy: c.String(), extra: x})
	case *instructions.AddCommand:
		x, err := bd.copyExtra(st, c.Location())
		if err != nil {
			return err
		}
		return bd.copy(ctx, st, c.SourcesAndDest, copyFlags{chown: c.Chown, chmod: c.Chmod, createdBy: c.String(), add: true,
			checksum: c.Checksum, keepGitDir: c.KeepGitDir, extra: x})
	}
	key, err := bd.key(st, fmt.Sprint(c))
	if err != nil || bd.cached(st, key) {
		return err
	}
	if err := bd.configStep(ctx, st, c); err != nil {
		return err
	}
	return bd.remember(ctx, st, key)
}

// configStep runs an instruction that changes the config (and WORKDIR,
// which may make its directory).
func (bd *build) configStep(ctx context.Context, st *stage, c instructions.Command) error {
	switch c := c.(type) {
	case *instructions.WorkdirCommand:
		return bd.workdir(ctx, st, c)
	case *instructions.MaintainerCommand:
		var err error
		st.img, err = editAuthor(st.img, c.Maintainer, c.String())
		return err
	}
	var handled bool
	var applyErr error
	img, err := editConfig(st.img, fmt.Sprint(c), func(cfg *v1.Config) {
		handled, applyErr = applyConfig(cfg, c, st.shell)
	})
	if err = errors.Join(err, applyErr); err != nil {
		return err
	}
	if !handled {
		return fmt.Errorf("%s is not supported by lodge build", strings.ToUpper(c.Name()))
	}
	st.img = img
	return nil
}

// editAuthor sets the image's author (MAINTAINER).
func editAuthor(img v1.Image, author, createdBy string) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Author = author
	cf.History = append(cf.History, v1.History{CreatedBy: createdBy, EmptyLayer: true, Comment: "lodge build"})
	return mutate.ConfigFile(img, cf)
}

// run is RUN: the command in a container of the stage's image, its
// changes the next layer.
func (bd *build) run(ctx context.Context, st *stage, c *instructions.RunCommand) error {
	network := bd.o.Network
	for _, f := range c.FlagsUsed {
		if f == "mount" {
			continue
		}
		if f != "network" {
			return fmt.Errorf("RUN --%s is not supported by lodge build", f)
		}
		switch n := instructions.GetNetwork(c); n {
		case instructions.NetworkNone:
			network = "none"
		case instructions.NetworkDefault:
		default:
			return fmt.Errorf("RUN --network=%s: want default or none", n)
		}
	}
	args, stdin, err := runArgs(c, st.shell)
	if err != nil {
		return err
	}
	im, err := bd.store(ctx, st)
	if err != nil {
		return err
	}
	cf, err := st.img.ConfigFile()
	if err != nil {
		return err
	}
	user := ""
	if cf.Config.User != "" {
		u, err := bd.union(ctx, st)
		if err != nil {
			return err
		}
		user, err = runUser(u, cf.Config.User)
		u.Close()
		if err != nil {
			return err
		}
	}
	mounts, err := bd.runMounts(ctx, st, c)
	if err != nil {
		return err
	}
	defer mounts.close()
	step := RunStep{Args: args, Stdin: stdin, Env: st.env(), User: user, Workdir: st.workdir, Network: network,
		Mounts: mounts.mounts, SecretEnv: mounts.secretEnv}
	key, err := bd.key(st, append([]string{"RUN", strings.Join(step.Args, "\x00"), string(stdin), user, st.workdir, network}, mounts.key...)...)
	if err != nil || bd.cached(st, key) {
		return err
	}
	f, err := bd.newLayerFile()
	if err != nil {
		return err
	}
	defer f.Close()
	if err := bd.b.Runner.Run(ctx, im.ConfigDigest.Hex, step, bd.o.Out, f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	img, err := addLayer(st.img, f.Name(), c.String())
	if err != nil {
		return err
	}
	st.img = img
	return bd.remember(ctx, st, key)
}

// heredocScript runs a script given on stdin as a file of its own (its
// #! line chooses its interpreter), removed after.
const heredocScript = `f=/tmp/.lodge-heredoc-$$; cat > "$f" && chmod 700 "$f" && "$f"; r=$?; rm -f "$f"; exit $r`

// runArgs is a RUN's argv and, for a here-document that names its own
// interpreter, the script it gets on stdin. As BuildKit runs them: a
// RUN that is one here-document runs its text in the shell (a #! text
// as a file of its own); one whose command uses here-documents gets them
// back in its text, for the shell to read.
func runArgs(c *instructions.RunCommand, shellCmd []string) ([]string, []byte, error) {
	if len(c.Files) == 0 {
		return shellForm(c.ShellDependantCmdLine, shellCmd), nil, nil
	}
	if len(c.CmdLine) != 1 || !c.PrependShell {
		return nil, nil, errors.New("a here-document RUN must be in shell form")
	}
	line := c.ShellDependantCmdLine
	if parser.MustParseHeredoc(c.CmdLine[0]) != nil {
		data := c.Files[0].Data
		if c.Files[0].Chomp {
			data = parser.ChompHeredocContent(data)
		}
		if strings.HasPrefix(data, "#!") {
			line.CmdLine = []string{heredocScript}
			return shellForm(line, shellCmd), []byte(data), nil
		}
		line.CmdLine = []string{data}
		return shellForm(line, shellCmd), nil, nil
	}
	full := c.CmdLine[0]
	for _, f := range c.Files {
		full += "\n" + f.Data + f.Name
	}
	line.CmdLine = []string{full}
	return shellForm(line, shellCmd), nil, nil
}

// workdir is WORKDIR: the config's, and the directory made where the
// image has none, as BuildKit makes it.
func (bd *build) workdir(ctx context.Context, st *stage, c *instructions.WorkdirCommand) error {
	img, err := editConfig(st.img, fmt.Sprint(c), func(cfg *v1.Config) { cfg.WorkingDir = st.workdir })
	if err != nil {
		return err
	}
	st.img = img
	u, err := bd.union(ctx, st)
	if err != nil {
		return err
	}
	defer u.Close()
	dir, err := u.Resolve(st.workdir, true)
	if err != nil {
		return err
	}
	if u.IsDir(dir) {
		return nil
	}
	lb := newLayer(u, bd.tmpDir)
	lb.put(dir, &pending{hdr: tar.Header{Typeflag: tar.TypeDir, Mode: 0o755, ModTime: lb.now}})
	return bd.writeLayer(st, lb, c.String())
}

// writeLayer adds lb's layer to the stage's image.
func (bd *build) writeLayer(st *stage, lb *layerBuilder, createdBy string) error {
	f, err := bd.newLayerFile()
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lb.write(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	img, err := addLayer(st.img, f.Name(), createdBy)
	if err != nil {
		return err
	}
	st.img = img
	return nil
}

// copyFlags are COPY's and ADD's.
type copyFlags struct {
	from, chown, chmod, createdBy string
	checksum                      string // ADD --checksum, of a URL source
	add, keepGitDir               bool
	extra                         copyExtra // --parents, --exclude
}

// copyExtra is the --parents and --exclude of the instruction at loc,
// its patterns expanded in the stage's environment.
func (bd *build) copyExtra(st *stage, loc []parser.Range) (copyExtra, error) {
	if len(loc) == 0 {
		return copyExtra{}, nil
	}
	return bd.copyExtras[loc[0].Start.Line].expanded(st.env(), '\\')
}

// copy is COPY (and ADD, which also unpacks local archives).
func (bd *build) copy(ctx context.Context, st *stage, sd instructions.SourcesAndDest, fl copyFlags) error {
	from, chown, chmod, add, createdBy := fl.from, fl.chown, fl.chmod, fl.add, fl.createdBy
	if len(sd.SourceContents) > 0 {
		return errors.New("COPY and ADD of a here-document are not supported by lodge build")
	}
	u, err := bd.union(ctx, st)
	if err != nil {
		return err
	}
	defer u.Close()
	o := copyOpts{}
	if o.owner, err = lookupOwner(u, chown); err != nil {
		return err
	}
	if chmod != "" {
		m, err := strconv.ParseUint(chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return fmt.Errorf("--chmod %s: want an octal mode", chmod)
		}
		mode := fs.FileMode(m)
		o.mode = &mode
	}
	if o.exclude, err = newExcluder(fl.extra.exclude); err != nil {
		return err
	}
	var src source
	type match struct{ path, pattern string } // a source and the source pattern it matched
	var srcs []match
	matched := func(pattern string, paths []string) {
		for _, p := range paths {
			srcs = append(srcs, match{p, pattern})
		}
	}
	var urls []string
	var gits []*gitutil.GitRef
	if from != "" {
		fu, err := bd.fromSource(ctx, from)
		if err != nil {
			return err
		}
		defer fu.Close()
		src, o.fromStage = unionSource{fu}, true
		for _, p := range sd.SourcePaths {
			ms, err := stageMatches(fu, p)
			if err != nil {
				return fmt.Errorf("%w in %s", err, from)
			}
			matched(p, ms)
		}
	} else {
		root, err := os.OpenRoot(bd.o.Context)
		if err != nil {
			return err
		}
		defer root.Close()
		src = contextSource{root}
		o.skip = bd.ignored
		for _, p := range sd.SourcePaths {
			if g, ok := gitSource(p); ok {
				if !add {
					return fmt.Errorf("COPY %s: a source cannot be a git repository (ADD clones one)", p)
				}
				gits = append(gits, g)
				continue
			}
			if strings.Contains(p, "://") {
				if !add {
					return fmt.Errorf("COPY %s: a source cannot be a URL (ADD fetches URLs)", p)
				}
				urls = append(urls, p)
				continue
			}
			m, err := bd.contextMatches(root, p)
			if err != nil {
				return err
			}
			matched(p, m)
		}
	}
	if fl.checksum != "" && (len(urls) != 1 || len(srcs) > 0) {
		return errors.New("ADD --checksum needs exactly one source, a URL")
	}
	dst := st.absPath(sd.DestPath)
	toDir := strings.HasSuffix(sd.DestPath, "/") || sd.DestPath == "." || len(srcs)+len(urls)+len(gits) > 1 || fl.extra.parents
	if r, err := u.Resolve(dst, true); err == nil && u.IsDir(r) {
		toDir, dst = true, r
	} else if r, err := u.Resolve(dst, false); err == nil {
		dst = r
	}
	lb := newLayer(u, bd.tmpDir)
	for _, m := range srcs {
		s := m.path
		fi, err := src.lstat(s)
		if err != nil {
			return err
		}
		if !o.fromStage && fi.Mode()&fs.ModeSymlink != 0 {
			// A source named in the instruction is followed, inside the
			// context.
			if s, err = bd.followInContext(s); err != nil {
				return err
			}
			if fi, err = src.lstat(s); err != nil {
				return err
			}
		}
		so := o
		so.excludeRoot = s
		target := dst
		if fl.extra.parents {
			target = path.Join(dst, parentsKept(m.pattern, m.path))
		}
		if fi.IsDir() {
			if err := lb.copyTree(src, s, target, so); err != nil {
				return err
			}
			continue
		}
		if o.exclude.out(path.Base(s)) {
			continue
		}
		if toDir && !fl.extra.parents {
			target = path.Join(dst, path.Base(s))
		}
		if add && !o.fromStage {
			if ok, err := lb.addArchive(filepath.Join(bd.o.Context, imagefs.Rel(s)), dst, o); ok || err != nil {
				if err != nil {
					return fmt.Errorf("ADD %s: %w", s, err)
				}
				continue
			}
		}
		if err := lb.copyTree(src, s, target, so); err != nil {
			return err
		}
	}
	for _, g := range gits {
		c, err := bd.addGit(ctx, lb, g, dst, fl.keepGitDir, o)
		if err != nil {
			return fmt.Errorf("ADD %s: %w", g.Remote, err)
		}
		defer c.Close()
	}
	for _, u := range urls {
		if err := bd.addURL(ctx, lb, u, dst, toDir, fl.checksum, o); err != nil {
			return err
		}
	}
	content, err := lb.digest()
	if err != nil {
		return err
	}
	key, err := bd.key(st, createdBy, content)
	if err != nil || bd.cached(st, key) {
		return err
	}
	if err := bd.writeLayer(st, lb, createdBy); err != nil {
		return err
	}
	return bd.remember(ctx, st, key)
}

// addURL is ADD of a URL: the download at dst (in dst, named as the
// URL's path ends, when dst is a directory), mode 0600 unless --chmod,
// root's unless --chown, as docker's ADD makes it.
func (bd *build) addURL(ctx context.Context, lb *layerBuilder, u, dst string, toDir bool, checksum string, o copyOpts) error {
	fmt.Fprintf(bd.o.Out, "Downloading %s\n", u)
	f, err := fetchURL(ctx, u, bd.tmpDir, checksum)
	if err != nil {
		return err
	}
	target := dst
	if toDir {
		if f.name == "" {
			return fmt.Errorf("%s: the URL names no file; give the destination's file name", u)
		}
		target = path.Join(dst, f.name)
	}
	h := tar.Header{Typeflag: tar.TypeReg, Mode: 0o600, Size: f.size, ModTime: f.modTime}
	if o.owner != nil {
		h.Uid, h.Gid = o.owner[0], o.owner[1]
	}
	if o.mode != nil {
		h.Mode = int64(*o.mode)
	}
	lb.put(target, &pending{hdr: h, open: func() (io.ReadCloser, error) { return os.Open(f.file) }})
	return nil
}

// fromSource is COPY --from's files: an earlier stage's, or an image's.
func (bd *build) fromSource(ctx context.Context, from string) (*imagefs.Union, error) {
	if prev := bd.stageNamed(from); prev != nil {
		return bd.union(ctx, prev)
	}
	im, err := bd.o.Base(ctx, from)
	if err != nil {
		return nil, err
	}
	return bd.imageUnion(ctx, im)
}

// contextMatches expands a source of the context (wildcards as
// globSource has them); none is an error, as docker's.
func (bd *build) contextMatches(root *os.Root, p string) ([]string, error) {
	clean := path.Clean("/" + p)
	if strings.HasPrefix(path.Clean(p), "..") {
		return nil, fmt.Errorf("%s: outside the build context", p)
	}
	if !hasGlob(clean) {
		if _, err := os.Lstat(filepath.Join(bd.o.Context, clean)); err != nil {
			return nil, fmt.Errorf("%s: %w", p, errNoMatch)
		}
		if bd.ignored(clean, false) {
			return nil, fmt.Errorf("%s: excluded by .dockerignore", p)
		}
		return []string{clean}, nil
	}
	found, err := globSource(contextSource{root}, clean)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range found {
		if !bd.ignored(f, false) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", p, errNoMatch)
	}
	return out, nil
}

// stageMatches expands a source of a stage or image: a path (its links
// followed) or a pattern (wildcards as globSource has them); none is an
// error.
func stageMatches(fu *imagefs.Union, p string) ([]string, error) {
	clean := path.Clean("/" + p)
	if hasGlob(clean) {
		found, err := globSource(unionSource{fu}, clean)
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no such file or directory", p)
		}
		return found, nil
	}
	m, err := fu.Resolve(p, true)
	if err != nil {
		return nil, err
	}
	if _, _, err := fu.Lstat(m); err != nil && m != "/" {
		return nil, fmt.Errorf("%s: no such file or directory", p)
	}
	return []string{m}, nil
}

// followInContext resolves a symbolic link of the context; its target
// must be in the context too.
func (bd *build) followInContext(p string) (string, error) {
	real, err := filepath.EvalSymlinks(filepath.Join(bd.o.Context, imagefs.Rel(p)))
	if err != nil {
		return "", err
	}
	ctxReal, err := filepath.EvalSymlinks(bd.o.Context)
	if err != nil {
		return "", err
	}
	r, err := filepath.Rel(ctxReal, real)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return "", fmt.Errorf("%s: a link to outside the build context", p)
	}
	return "/" + filepath.ToSlash(r), nil
}

// ignored reports whether .dockerignore excludes context path p.
func (bd *build) ignored(p string, _ bool) bool {
	if bd.ignore == nil {
		return false
	}
	ok, err := bd.ignore.MatchesOrParentMatches(imagefs.Rel(p))
	return err == nil && ok
}
