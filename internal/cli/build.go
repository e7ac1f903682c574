package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/build"
	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/procid"
)

// buildLabel marks a RUN step's container with its build's ID.
const buildLabel = "io.lodge.build"

// holderPath is where a RUN step's container finds the host's static
// busybox, whose sleep holds the container while the step's command runs
// as an exec (the image may have no sleep, or no shell at all).
const holderPath = "/.lodge-build/busybox"

func addBuildCommand(root *cobra.Command, a *app) {
	var o build.Options
	var tags, buildArgs, labels, secrets []string
	var quiet bool
	var pull string
	cmd := &cobra.Command{
		Use:   "build [flags] CONTEXT",
		Short: "build an image from a Dockerfile (each RUN in a microVM of its own)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			o.Context = args[0]
			if fi, err := os.Stat(o.Context); err != nil || !fi.IsDir() {
				return lodgeError(fmt.Errorf("the build context %s must be a directory", o.Context))
			}
			for _, t := range tags {
				ref, err := image.ParseName(t)
				if err != nil {
					return lodgeError(fmt.Errorf("-t %s: %w", t, err))
				}
				if strings.Contains(t, "@") {
					return lodgeError(fmt.Errorf("-t %s: a built image is named by a tag, not a digest", t))
				}
				o.Tags = append(o.Tags, image.StoreName(ref))
			}
			o.BuildArgs = map[string]string{}
			for _, kv := range buildArgs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					if v, ok = os.LookupEnv(k); !ok {
						continue
					}
				}
				o.BuildArgs[k] = v
			}
			var err error
			if o.Labels, err = labelMap(labels); err != nil {
				return lodgeError(err)
			}
			if o.Secrets, err = secretMap(secrets); err != nil {
				return lodgeError(err)
			}
			if o.Network != "" && o.Network != "bridge" && o.Network != "none" && o.Network != "default" {
				return lodgeError(fmt.Errorf("--network %s: want bridge or none", o.Network))
			}
			if o.Network == "default" {
				o.Network = "bridge"
			}
			o.Out = cmd.OutOrStdout()
			if quiet {
				o.Out = io.Discard
			}
			o.Base = func(ctx context.Context, name string) (*image.Image, error) {
				st := a.images()
				im, err := st.Find(normalise(name))
				if pull == "always" || errors.Is(err, image.ErrNotFound) && pull == "missing" {
					im, err = a.pull(cmd, name, "")
				}
				return im, err
			}
			if o.Dockerfile == "-" {
				f, err := copyToStore(a.images(), cmd.InOrStdin())
				if err != nil {
					return lodgeError(fmt.Errorf("the Dockerfile from stdin: %w", err))
				}
				defer os.Remove(f)
				o.Dockerfile = f
			}
			me := procid.Of(os.Getpid())
			o.ID = fmt.Sprintf("%d-%d", me.Pid, me.Start)
			a.cleanBuilds(ctx)
			b := &build.Builder{Store: a.images(), Runner: buildRunner{a: a, id: o.ID}}
			im, err := b.Build(ctx, o)
			if err != nil {
				return lodgeError(err)
			}
			if quiet {
				fmt.Fprintln(cmd.OutOrStdout(), im.ConfigDigest)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Successfully built %s\n", im.ConfigDigest.Hex[:12])
			for _, t := range o.Tags {
				fmt.Fprintf(cmd.OutOrStdout(), "Successfully tagged %s\n", displayName(t))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&tags, "tag", "t", nil, "name the image NAME[:TAG] (more than once for more names)")
	f.StringVarP(&o.Dockerfile, "file", "f", "", "the Dockerfile (default: CONTEXT/Dockerfile; - reads it from stdin)")
	f.StringArrayVar(&buildArgs, "build-arg", nil, "set an ARG, KEY=VALUE (KEY alone: from the environment)")
	f.StringVar(&o.Target, "target", "", "build up to this stage")
	f.StringVar(&o.Network, "network", "bridge", "RUN's network: bridge or none")
	f.StringArrayVar(&labels, "label", nil, "set a label on the image, KEY=VALUE")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the image ID")
	f.BoolVar(&o.NoCache, "no-cache", false, "run every step, even those the build cache has")
	f.StringVar(&pull, "pull", "missing", "pull FROM images: missing, always or never")
	f.StringArrayVar(&secrets, "secret", nil, "a secret for RUN --mount=type=secret: id=ID[,src=FILE | ,env=VARIABLE] (id alone: the variable ID)")
	root.AddCommand(cmd)
}

// secretMap reads --secret values, as docker buildx has them.
func secretMap(vals []string) (map[string]build.Secret, error) {
	out := map[string]build.Secret{}
	for _, v := range vals {
		var id, typ string
		var sec build.Secret
		for _, field := range strings.Split(v, ",") {
			k, val, _ := strings.Cut(field, "=")
			switch k {
			case "id":
				id = val
			case "type":
				typ = val
			case "src", "source":
				sec.File = val
			case "env":
				sec.Env = val
			default:
				return nil, fmt.Errorf("--secret %s: unknown key %q (want id, src, env or type)", v, k)
			}
		}
		if id == "" {
			return nil, fmt.Errorf("--secret %s: no id=", v)
		}
		switch {
		case typ != "" && typ != "file" && typ != "env":
			return nil, fmt.Errorf("--secret %s: type=%s: want file or env", v, typ)
		case sec.File != "" && sec.Env != "":
			return nil, fmt.Errorf("--secret %s: src= or env=, not both", v)
		case sec.File == "" && sec.Env == "" && typ == "file":
			sec.File = id
		case sec.File == "" && sec.Env == "":
			sec.Env = id
		}
		if sec.File != "" {
			if _, err := os.Stat(sec.File); err != nil {
				return nil, fmt.Errorf("--secret %s: %w", v, err)
			}
		} else if _, ok := os.LookupEnv(sec.Env); !ok {
			return nil, fmt.Errorf("--secret %s: the environment variable %s is not set", v, sec.Env)
		}
		out[id] = sec
	}
	return out, nil
}

// buildRunner runs a RUN step as `lodge` does a container: `lodge run -d`
// of the step's image holding the container with the host's busybox
// sleep, `lodge exec` of the command (its output to the build's), the
// container's changes read by its guest (as lodge commit reads them),
// and `lodge rm -f -v`, whatever happened (what a RUN writes under a VOLUME
// of the image is dropped with it, as docker drops it).
type buildRunner struct {
	a  *app
	id string // the build's (Options.ID): its containers' label
}

func (br buildRunner) Run(ctx context.Context, imageID string, step build.RunStep, out io.Writer, layer io.Writer) error {
	if _, err := os.Stat(image.BuiltinBusybox); err != nil {
		return fmt.Errorf("RUN holds its container with the host's %s: install busybox-static", image.BuiltinBusybox)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	name := "lodge-build-" + newID()[:12]
	lodge := func(stdout io.Writer, args ...string) (int, string, error) {
		cmd := exec.CommandContext(ctx, self, args...)
		if args[0] == "exec" && step.Stdin != nil {
			cmd.Stdin = bytes.NewReader(step.Stdin)
		}
		if args[0] == "exec" {
			cmd.Env = append(os.Environ(), step.SecretEnv...) // exec -e NAME takes them from here
		}
		var errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = stdout, io.MultiWriter(&errb, stdout)
		if stdout == nil {
			cmd.Stdout, cmd.Stderr = io.Discard, &errb
		}
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), strings.TrimSpace(errb.String()), nil
		}
		return 0, "", err
	}
	// --no-healthcheck: a base image's HEALTHCHECK is not run in a build.
	run := []string{"run", "-d", "--name", name, "--network", step.Network, "--pull", "never", "-u", "0:0", "-w", "/", "--no-healthcheck",
		"--label", buildLabel + "=" + br.id, "-v", image.BuiltinBusybox + ":" + holderPath + ":ro", "--entrypoint", holderPath}
	for _, m := range step.Mounts {
		switch {
		case m.Type == "tmpfs" && m.Size > 0:
			run = append(run, "--tmpfs", fmt.Sprintf("%s:rw,nosuid,nodev,size=%d", m.Target, m.Size))
		case m.Type == "tmpfs":
			run = append(run, "--tmpfs", m.Target+":rw,nosuid,nodev")
		case m.ReadOnly:
			run = append(run, "-v", m.Source+":"+m.Target+":ro")
		default:
			run = append(run, "-v", m.Source+":"+m.Target)
		}
	}
	code, msg, err := lodge(nil, append(run, imageID, "sleep", "2147483647")...)
	if err == nil && code != 0 {
		err = fmt.Errorf("a container for the step: %s", msg)
	}
	defer lodge(nil, "rm", "-f", "-v", name) // -v: the anonymous volumes of the image's VOLUMEs
	if err != nil {
		return err
	}
	args := []string{"exec", "-w", step.Workdir}
	if step.Stdin != nil {
		args = append(args, "-i")
	}
	if step.User != "" {
		args = append(args, "-u", step.User)
	}
	for _, e := range step.Env {
		args = append(args, "-e", e)
	}
	for _, e := range step.SecretEnv {
		k, _, _ := strings.Cut(e, "=")
		args = append(args, "-e", k)
	}
	args = append(append(args, name), step.Args...)
	code, _, err = lodge(out, args...)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("the command %q returned a non-zero code: %d", strings.Join(step.Args, " "), code)
	}
	r, err := findCtr(name)
	if err != nil {
		return err
	}
	return br.a.changes(ctx, r, true, false, func(rd io.Reader) error {
		_, err := layers.ReadChanges(rd, layer)
		return err
	})
}

// cleanBuilds removes what builds whose process has died left: their RUN
// containers, their intermediate images' names and their files (a build
// that ends, however it ends, removes its own).
func (a *app) cleanBuilds(ctx context.Context) {
	dead := func(id string) bool {
		pid, start, ok := strings.Cut(id, "-")
		p, err1 := strconv.Atoi(pid)
		s, err2 := strconv.ParseUint(start, 10, 64)
		return ok && err1 == nil && err2 == nil && !(procid.ID{Pid: p, Start: s}).Alive()
	}
	if ctrs, err := allCtrs(); err == nil {
		for _, r := range ctrs {
			if id, ok := r.Labels[buildLabel]; ok && dead(id) {
				removeCtr(a, r, true)
			}
		}
	}
	st := a.images()
	if refs, err := st.List(); err == nil {
		for _, ref := range refs {
			rest, ok := strings.CutPrefix(ref.Name, build.TmpPrefix)
			if id, _, _ := strings.Cut(rest, ":"); ok && dead(id) {
				st.Untag(ctx, ref.Name)
			}
		}
	}
	// Its files: layer tars, and the copies its RUN mounts made (of
	// secrets too).
	if dirs, err := filepath.Glob(build.TmpDir(st.Dir, "*")); err == nil {
		for _, d := range dirs {
			if id := strings.TrimPrefix(filepath.Base(d), "build-"); dead(id) {
				os.RemoveAll(d)
			}
		}
	}
}
