package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/oci"
)

// securityOptsHelp lists what --security-opt takes.
const securityOptsHelp = "seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges[=true|false]"

// applySecurityOpts gives spec docker's seccomp profile for its
// capabilities (moby's own default profile, the one `docker run` applies)
// unless opts (docker's --security-opt values) ask for another profile or
// none, and sets no_new_privs if they ask for it. The seccomp profile is
// enforced in the guest, around the container's processes: it narrows
// what a container can ask of its guest kernel, the first thing an
// attacker in it would have to break.
func applySecurityOpts(spec *specs.Spec, opts []string) error {
	profile := "" // docker's default
	for _, o := range opts {
		k, v, hasV := strings.Cut(o, "=")
		if !hasV {
			k, v, hasV = strings.Cut(o, ":") // docker's older spelling
		}
		switch k {
		case "seccomp":
			if v == "" {
				return fmt.Errorf("--security-opt %q: give seccomp=unconfined or seccomp=PROFILE.json", o)
			}
			profile = v
		case "no-new-privileges":
			switch v {
			case "", "true":
				spec.Process.NoNewPrivileges = true
			case "false":
				spec.Process.NoNewPrivileges = false
			default:
				return fmt.Errorf("--security-opt %q: no-new-privileges is true or false", o)
			}
		default:
			return fmt.Errorf("--security-opt %q is not supported (supported: %s)", o, securityOptsHelp)
		}
	}
	var err error
	switch profile {
	case "unconfined":
		spec.Linux.Seccomp = nil
	case "":
		spec.Linux.Seccomp, err = oci.DockerSeccomp(spec.Process.Capabilities.Bounding)
		if err != nil {
			return fmt.Errorf("docker's default seccomp profile: %w", err)
		}
	default:
		b, rerr := os.ReadFile(profile)
		if rerr != nil {
			return fmt.Errorf("--security-opt seccomp=%s: %w", profile, rerr)
		}
		if spec.Linux.Seccomp, err = seccomp.LoadProfile(string(b), spec); err != nil {
			return fmt.Errorf("--security-opt seccomp=%s: not a seccomp profile docker accepts: %w", profile, err)
		}
	}
	return nil
}
