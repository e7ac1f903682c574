package cli

// Naming images and moving them to registries: tag, push, login, logout,
// image inspect.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/image"
)

func addRegistryCommands(root *cobra.Command, imageCmd *cobra.Command, a *app) {
	tag := &cobra.Command{
		Use:   "tag SOURCE TARGET",
		Short: "give an image another name (REGISTRY/REPOSITORY:TAG)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st := a.images()
			im, err := st.Find(normalise(args[0]))
			if err != nil {
				return err
			}
			ref, err := image.ParseName(args[1])
			if err != nil {
				return err
			}
			if _, ok := ref.(name.Tag); !ok {
				return fmt.Errorf("tag %s: a target names a tag, not a digest", args[1])
			}
			if err := st.Tag(cmd.Context(), image.StoreName(ref), im.Ref.Manifest); err != nil {
				return err
			}
			emitImage("tag", "sha256:"+im.ConfigDigest.Hex, image.StoreName(ref))
			return nil
		},
	}
	push := &cobra.Command{
		Use:   "push IMAGE",
		Short: "upload an image to its registry (credentials: lodge login, or docker's)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st := a.images()
			ref, err := image.ParseName(args[0])
			if err != nil {
				return err
			}
			im, err := st.Find(image.StoreName(ref))
			if err != nil {
				return fmt.Errorf("push %s: %w (lodge tag an image with this name first)", args[0], err)
			}
			out := cmd.ErrOrStderr()
			fmt.Fprintf(out, "Pushing %s\n", displayName(ref.Name()))
			if err := st.Push(cmd.Context(), im, ref, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: digest: %s\n", displayName(ref.Name()), im.Ref.Manifest)
			emitImage("push", displayName(ref.Name()), im.Name)
			return nil
		},
	}
	var user, password string
	var passwordStdin bool
	login := &cobra.Command{
		Use:   "login [-u USER] [-p PASSWORD | --password-stdin] [REGISTRY]",
		Short: "store credentials for a registry where docker keeps them (default: Docker Hub)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg := name.DefaultRegistry
			if len(args) == 1 {
				reg = args[0]
			}
			if passwordStdin {
				if password != "" {
					return errors.New("login: --password and --password-stdin: give one")
				}
				p, err := readPassword(a.env.In)
				if err != nil {
					return err
				}
				password = p
			}
			if user == "" || password == "" {
				return errors.New("login: give -u USER and the password (--password-stdin reads it from stdin)")
			}
			where, err := image.Login(cmd.Context(), reg, user, password)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "credentials stored in %s\n", where)
			fmt.Fprintln(cmd.OutOrStdout(), "Login Succeeded")
			return nil
		},
	}
	login.Flags().StringVarP(&user, "username", "u", "", "user name")
	login.Flags().StringVarP(&password, "password", "p", "", "password (it shows in the process list: prefer --password-stdin)")
	login.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	logout := &cobra.Command{
		Use:   "logout [REGISTRY]",
		Short: "remove the credentials stored for a registry (default: Docker Hub)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg := name.DefaultRegistry
			if len(args) == 1 {
				reg = args[0]
			}
			had, err := image.Logout(reg)
			if err != nil {
				return err
			}
			if !had {
				fmt.Fprintf(cmd.OutOrStdout(), "Not logged in to %s\n", reg)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removing login credentials for %s\n", reg)
			return nil
		},
	}
	var inspectFormat string
	inspect := &cobra.Command{
		Use:   "inspect [-f TEMPLATE] IMAGE...",
		Short: "describe images (a JSON array, or a Go template's output for each)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []any
			for _, n := range args {
				d, err := inspectImage(a.images(), n)
				if err != nil {
					return err
				}
				out = append(out, d)
			}
			return printInspect(cmd.OutOrStdout(), out, inspectFormat)
		},
	}
	inspect.Flags().StringVarP(&inspectFormat, "format", "f", "", "a Go template, e.g. '{{.Id}}'")
	imageCmd.AddCommand(cloneCmd(tag), cloneCmd(push), inspect)
	root.AddCommand(tag, push, login, logout)
	addHistoryCommand(root, imageCmd, a)
}

// readPassword reads one line (docker's --password-stdin).
func readPassword(in io.Reader) (string, error) {
	if in == nil {
		return "", errors.New("login: --password-stdin: no stdin")
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("login: read the password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// inspectImage is docker's image inspect of what n names.
func inspectImage(st *image.Store, n string) (map[string]any, error) {
	im, err := st.Find(normalise(n))
	if err != nil {
		return nil, err
	}
	refs, err := st.List()
	if err != nil {
		return nil, err
	}
	tags, digests := []string{}, []string{}
	for _, r := range refs {
		if r.Manifest != im.Ref.Manifest {
			continue
		}
		repo, _ := splitName(r.Name)
		if !strings.Contains(r.Name, "@") {
			tags = append(tags, displayName(r.Name))
		}
		if d := repo + "@" + r.Manifest.String(); !slices.Contains(digests, d) {
			digests = append(digests, d)
		}
	}
	c := im.Config
	return map[string]any{
		"Id": "sha256:" + im.ConfigDigest.Hex, "RepoTags": tags, "RepoDigests": digests,
		"Created": c.Created.Time, "Architecture": c.Architecture, "Os": c.OS, "Config": c.Config,
		"RootFS": c.RootFS, "Size": im.Size(),
	}, nil
}
