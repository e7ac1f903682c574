package build

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Change applies one Dockerfile instruction that shapes only an image's
// config (lodge commit --change: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
// USER, VOLUME, WORKDIR, STOPSIGNAL) to cfg; its words are expanded with
// cfg's environment.
func Change(cfg *v1.Config, line string) error {
	res, err := parser.Parse(strings.NewReader(line))
	if err != nil {
		return err
	}
	if len(res.AST.Children) != 1 {
		return errors.New("want one instruction")
	}
	ins, err := instructions.ParseInstruction(res.AST.Children[0])
	if err != nil {
		return err
	}
	switch ins.(type) {
	case *instructions.CmdCommand, *instructions.EntrypointCommand, *instructions.EnvCommand,
		*instructions.ExposeCommand, *instructions.LabelCommand, *instructions.UserCommand,
		*instructions.VolumeCommand, *instructions.WorkdirCommand, *instructions.StopSignalCommand:
	default:
		return errors.New("commit takes CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR or STOPSIGNAL")
	}
	if err := expand(ins, cfg.Env, res.EscapeToken); err != nil {
		return err
	}
	_, err = applyConfig(cfg, ins, nil)
	return err
}

// expand expands an instruction's words with env, as the Dockerfile's
// escape token says.
func expand(ins any, env []string, escape rune) error {
	e, ok := ins.(instructions.SupportsSingleWordExpansion)
	if !ok {
		return nil
	}
	return e.Expand(wordExpander(env, escape))
}

// wordExpander expands a word's variables in env, as an instruction's
// words are.
func wordExpander(env []string, escape rune) func(string) (string, error) {
	lex := shell.NewLex(escape)
	return func(w string) (string, error) {
		out, _, err := lex.ProcessWord(w, shell.EnvsFromSlice(env))
		return out, err
	}
}

// shellForm is a CMD's, ENTRYPOINT's or RUN's argv: its exec form, or
// its shell form run by shellCmd (the SHELL, /bin/sh -c unless set).
func shellForm(c instructions.ShellDependantCmdLine, shellCmd []string) []string {
	if !c.PrependShell {
		return c.CmdLine
	}
	if len(shellCmd) == 0 {
		shellCmd = []string{"/bin/sh", "-c"}
	}
	return append(append([]string{}, shellCmd...), strings.Join(c.CmdLine, " "))
}

// applyConfig applies an instruction that changes only the config; it
// reports false for one that does not (RUN, COPY, ...). shellCmd is the
// stage's SHELL for shell forms.
func applyConfig(cfg *v1.Config, ins any, shellCmd []string) (bool, error) {
	if shellCmd == nil {
		shellCmd = cfg.Shell
	}
	switch c := ins.(type) {
	case *instructions.CmdCommand:
		cfg.Cmd = shellForm(c.ShellDependantCmdLine, shellCmd)
	case *instructions.EntrypointCommand:
		cfg.Entrypoint, cfg.Cmd = shellForm(c.ShellDependantCmdLine, shellCmd), nil
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			cfg.Env = setEnv(cfg.Env, kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, kv := range c.Labels {
			cfg.Labels[kv.Key] = kv.Value
		}
	case *instructions.ExposeCommand:
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range c.Ports {
			port, proto, ok := strings.Cut(p, "/")
			if !ok {
				proto = "tcp"
			}
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || (proto != "tcp" && proto != "udp" && proto != "sctp") {
				return true, fmt.Errorf("EXPOSE %s: want PORT[/tcp|udp|sctp]", p)
			}
			cfg.ExposedPorts[port+"/"+proto] = struct{}{}
		}
	case *instructions.UserCommand:
		cfg.User = c.User
	case *instructions.VolumeCommand:
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if !path.IsAbs(v) {
				return true, fmt.Errorf("VOLUME %s: the path must be absolute", v)
			}
			cfg.Volumes[v] = struct{}{}
		}
	case *instructions.WorkdirCommand:
		wd := c.Path
		if !path.IsAbs(wd) {
			wd = path.Join("/", cfg.WorkingDir, wd)
		}
		cfg.WorkingDir = path.Clean(wd)
	case *instructions.StopSignalCommand:
		cfg.StopSignal = c.Signal
	case *instructions.ShellCommand:
		cfg.Shell = c.Shell
	case *instructions.OnbuildCommand:
		cfg.OnBuild = append(cfg.OnBuild, c.Expression)
	case *instructions.HealthCheckCommand:
		h := c.Health
		cfg.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	default:
		return false, nil
	}
	return true, nil
}

// setEnv sets key in env, where it was or at the end.
func setEnv(env []string, key, value string) []string {
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			env[i] = key + "=" + value
			return env
		}
	}
	return append(env, key+"="+value)
}
