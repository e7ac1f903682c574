// Package build makes images from Dockerfiles (lodge build), as docker's
// builder does, with Lodge's parts: BuildKit's parser reads the
// Dockerfile; a RUN runs in a container of its own microVM (Runner) whose
// changes its guest sends back (lodge commit's path); COPY, ADD and
// WORKDIR write their layers on the host from the build context or a
// stage's layer images, which the host made and reads with go-erofs;
// go-containerregistry's mutate assembles each image.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/imagefs"
)

// RunStep is one RUN: a command in a container of an image.
type RunStep struct {
	Args, Env              []string
	User, Workdir, Network string
	Stdin                  []byte  // the command's input (none: nil)
	Mounts                 []Mount // RUN --mount's, made on the host
	// SecretEnv is NAME=VALUE of the secrets the command gets as
	// environment variables: to be handed over as no command line
	// carries them (a host's command lines are everyone's to read).
	SecretEnv []string
}

// Mount is what a RUN --mount gives the step's container.
type Mount struct {
	Type     string // "bind" (Source, a host file or directory) or "tmpfs"
	Source   string
	Target   string // absolute, in the container
	ReadOnly bool
	Size     int64 // a tmpfs's, in bytes (0: the runner's default)
}

// Secret is where a build secret (lodge build --secret) is read: a file
// or an environment variable of the builder.
type Secret struct{ File, Env string }

// Runner runs RUN steps.
type Runner interface {
	// Run runs step in a container of the stored image imageID, its
	// output to out, and writes the container's changes as a layer tar
	// to layer. A command that fails is an error that says its status.
	Run(ctx context.Context, imageID string, step RunStep, out io.Writer, layer io.Writer) error
}

// Options is what lodge build was asked.
type Options struct {
	Context    string // the build context, a directory
	Dockerfile string // its path ("": Dockerfile in the context)
	Tags       []string
	BuildArgs  map[string]string
	Target     string
	Network    string // RUN's network: bridge (default) or none
	Labels     map[string]string
	NoCache    bool              // run every step (what they make is still remembered)
	Secrets    map[string]Secret // RUN --mount=type=secret's, by id
	// ID names the build's intermediate images (localhost/lodge-build-ID:N)
	// and its RUN containers' label: the builder's process (Builder's
	// callers clean up after builders that died).
	ID string
	// Base resolves a FROM image (pulling it as the caller's policy says).
	Base func(ctx context.Context, name string) (*image.Image, error)
	Out  io.Writer // progress and RUN's output
}

// TmpPrefix begins the names of a build's intermediate images, untagged
// when it ends.
const TmpPrefix = "localhost/lodge-build-"

// TmpDir is the directory of build id's files (layer tars, bind mounts'
// copies, secrets' copies), removed when it ends; a build killed first
// leaves it for its callers to remove (as its names).
func TmpDir(storeDir, id string) string { return filepath.Join(storeDir, "tmp", "build-"+id) }

// Builder builds images into a store.
type Builder struct {
	Store  *image.Store
	Runner Runner
}

// stage is a stage's state while it is built.
type stage struct {
	name    string
	img     v1.Image
	stored  *image.Image // img in the store, if it is (RUN and COPY --from need it)
	workdir string
	shell   []string
	args    map[string]string // ARG values in scope
}

// build is one build's state.
type build struct {
	b       *Builder
	o       Options
	tmpTags []string // intermediate images' names, untagged at the end
	tmpDir  string
	id      string
	stages  []*stage
	ignore  *patternmatcher.PatternMatcher
	global  map[string]string // the ARGs before the first FROM
	// copyExtras are COPY's and ADD's --parents and --exclude, by line.
	copyExtras map[int]copyExtra
}

// Build builds the Dockerfile and returns the image of its target stage
// (its last, unless Options.Target), tagged with Options.Tags.
func (b *Builder) Build(ctx context.Context, o Options) (*image.Image, error) {
	df := o.Dockerfile
	if df == "" {
		df = filepath.Join(o.Context, "Dockerfile")
	}
	text, err := os.ReadFile(df)
	if err != nil {
		return nil, fmt.Errorf("the Dockerfile: %w", err)
	}
	res, err := parser.Parse(strings.NewReader(string(text)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", df, err)
	}
	extras, err := takeCopyFlags(res.AST)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", df, err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", df, err)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%s has no FROM", df)
	}
	last := len(stages) - 1
	if o.Target != "" {
		i, ok := instructions.HasStage(stages, o.Target)
		if !ok {
			return nil, fmt.Errorf("--target %s: the Dockerfile has no stage of that name", o.Target)
		}
		last = i
	}
	if o.Network == "" {
		o.Network = "bridge"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ID == "" {
		o.ID = fmt.Sprintf("%x", time.Now().UnixNano())
	}
	bd := &build{b: b, o: o, id: o.ID, copyExtras: extras}
	if bd.ignore, err = readIgnore(o.Context); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(b.Store.Dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	bd.tmpDir = TmpDir(b.Store.Dir, o.ID)
	if err := os.Mkdir(bd.tmpDir, 0o700); err != nil {
		return nil, err
	}
	defer bd.cleanup(context.WithoutCancel(ctx))
	global := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			global[kv.Key] = bd.argValue(kv.Key, kv.Value)
		}
	}
	steps := 0
	for _, s := range stages[:last+1] {
		steps += 1 + len(s.Commands)
	}
	n := 0
	for i, s := range stages[:last+1] {
		n++
		fmt.Fprintf(o.Out, "STEP %d/%d: %s\n", n, steps, s.SourceCode)
		st, err := bd.from(ctx, s, global)
		if err != nil {
			return nil, fmt.Errorf("stage %d (%s): %w", i, s.SourceCode, err)
		}
		bd.stages = append(bd.stages, st)
		for _, c := range s.Commands {
			n++
			fmt.Fprintf(o.Out, "STEP %d/%d: %s\n", n, steps, c)
			if err := bd.step(ctx, st, c); err != nil {
				return nil, fmt.Errorf("%s: %w", c, err)
			}
		}
	}
	cf, err := bd.stages[last].img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	for k, v := range o.Labels {
		if cf.Config.Labels == nil {
			cf.Config.Labels = map[string]string{}
		}
		cf.Config.Labels[k] = v
	}
	img, err := mutate.ConfigFile(bd.stages[last].img, cf)
	if err != nil {
		return nil, err
	}
	var out *image.Image
	names := o.Tags
	if len(names) == 0 {
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		names = []string{image.UntaggedName(d)}
	}
	for _, name := range names {
		if out, err = b.Store.Import(ctx, img, name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// cleanup untags the intermediate images (their blobs stay for the final
// image; what nothing names goes with lodge image prune) and removes the
// build's files.
func (bd *build) cleanup(ctx context.Context) {
	for _, t := range bd.tmpTags {
		bd.b.Store.Untag(ctx, t)
	}
	os.RemoveAll(bd.tmpDir)
}

// argValue is an ARG's value: --build-arg's, else its default.
func (bd *build) argValue(key string, def *string) string {
	if v, ok := bd.o.BuildArgs[key]; ok {
		return v
	}
	if def != nil {
		return *def
	}
	return ""
}

// from starts a stage: FROM scratch, an earlier stage, or an image.
func (bd *build) from(ctx context.Context, s instructions.Stage, global map[string]string) (*stage, error) {
	lex := shell.NewLex('\\')
	base, _, err := lex.ProcessWord(s.BaseName, shell.EnvsFromSlice(envOf(global)))
	if err != nil {
		return nil, err
	}
	if s.Platform != "" && s.Platform != "linux/amd64" {
		return nil, fmt.Errorf("--platform %s: Lodge builds linux/amd64 images", s.Platform)
	}
	st := &stage{name: strings.ToLower(s.Name), workdir: "/", shell: []string{"/bin/sh", "-c"}, args: map[string]string{}}
	switch prev := bd.stageNamed(base); {
	case prev != nil:
		st.img, st.stored = prev.img, prev.stored
	case base == "scratch":
		img, err := image.Scratch()
		if err != nil {
			return nil, err
		}
		if st.img, err = editConfig(img, "", func(c *v1.Config) {
			c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		}); err != nil {
			return nil, err
		}
	default:
		im, err := bd.o.Base(ctx, base)
		if err != nil {
			return nil, err
		}
		if len(im.Config.Config.OnBuild) > 0 {
			fmt.Fprintf(bd.o.Out, "warning: %s has ONBUILD triggers, which lodge build does not run\n", base)
		}
		if st.img, err = bd.b.Store.V1(im); err != nil {
			return nil, err
		}
		st.stored = im
	}
	cf, err := st.img.ConfigFile()
	if err != nil {
		return nil, err
	}
	if cf.Config.WorkingDir != "" {
		st.workdir = cf.Config.WorkingDir
	}
	if len(cf.Config.Shell) > 0 {
		st.shell = cf.Config.Shell
	}
	bd.global = global // a global ARG is seen in a stage once declared there (step)
	return st, nil
}

// stageNamed is the earlier stage called name (a name or an index).
func (bd *build) stageNamed(name string) *stage {
	for i, s := range bd.stages {
		if s.name != "" && s.name == strings.ToLower(name) || fmt.Sprint(i) == name {
			return s
		}
	}
	return nil
}

// env is what a stage's instructions expand with and RUN gets: its ARGs
// with its config's environment over them.
func (st *stage) env() []string {
	cf, err := st.img.ConfigFile()
	var env []string
	if err == nil {
		env = cf.Config.Env
	}
	out := envOf(st.args)
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		out = slices.DeleteFunc(out, func(s string) bool { return strings.HasPrefix(s, k+"=") })
		out = append(out, e)
	}
	return out
}

func envOf(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// editConfig returns img with its config changed by f and, with
// createdBy, a history entry for the change (no layer).
func editConfig(img v1.Image, createdBy string, f func(*v1.Config)) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	f(&cf.Config)
	if createdBy != "" {
		cf.History = append(cf.History, v1.History{Created: v1.Time{Time: time.Now().UTC().Truncate(time.Second)},
			CreatedBy: createdBy, EmptyLayer: true, Comment: "lodge build"})
	}
	return mutate.ConfigFile(img, cf)
}

// addLayer returns img with the layer tar at file added.
func addLayer(img v1.Image, file, createdBy string) (v1.Image, error) {
	return image.AppendLayer(img, file, v1.History{Created: v1.Time{Time: time.Now().UTC().Truncate(time.Second)},
		CreatedBy: createdBy, Comment: "lodge build"})
}

// store puts the stage's image in the store (under a name untagged at the
// end of the build) unless it is there already.
func (bd *build) store(ctx context.Context, st *stage) (*image.Image, error) {
	d, err := st.img.Digest()
	if err != nil {
		return nil, err
	}
	if st.stored != nil && st.stored.Ref.Manifest == d {
		return st.stored, nil
	}
	name := fmt.Sprintf("%s%s:%d", TmpPrefix, bd.id, len(bd.tmpTags))
	bd.tmpTags = append(bd.tmpTags, name)
	im, err := bd.b.Store.Import(ctx, st.img, name)
	if err != nil {
		return nil, err
	}
	st.stored = im
	return im, nil
}

// union opens the merged view of the stage's files.
func (bd *build) union(ctx context.Context, st *stage) (*imagefs.Union, error) {
	im, err := bd.store(ctx, st)
	if err != nil {
		return nil, err
	}
	return bd.imageUnion(ctx, im)
}

// imageUnion opens the merged view of a stored image's files.
func (bd *build) imageUnion(ctx context.Context, im *image.Image) (*imagefs.Union, error) {
	lays, err := bd.b.Store.RootLayers(ctx, im)
	if err != nil {
		return nil, err
	}
	return imagefs.Open(lays)
}

// newLayerFile is a file for a layer tar in the build's directory.
func (bd *build) newLayerFile() (*os.File, error) {
	return os.CreateTemp(bd.tmpDir, "layer-*.tar")
}

func readIgnore(dir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pats, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return patternmatcher.New(pats)
}

// absPath is p (of an instruction) against the stage's working directory.
func (st *stage) absPath(p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join("/", st.workdir, p)
}
