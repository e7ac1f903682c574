package directinit

// The process: its terminal, environment, capabilities, user and program
// (runc's setupConsole and finalizeNamespace).

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/capabilities"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// setupConsole gives the process a new terminal from the container's
// devpts: the master goes to the agent, the peer becomes stdio and the
// controlling terminal (and /dev/console of a container's init).
func (in *Config) setupConsole(socket *os.File) error {
	defer socket.Close()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlockpt: %w", err)
	}
	peerFd, _, errno := unix.Syscall(unix.SYS_IOCTL, master.Fd(), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		return fmt.Errorf("open the peer: %w", errno)
	}
	peer := os.NewFile(peerFd, "pty-peer")
	defer peer.Close()
	if in.ConsoleSizeW != 0 && in.ConsoleSizeH != 0 {
		ws := &unix.Winsize{Col: in.ConsoleSizeW, Row: in.ConsoleSizeH}
		if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws); err != nil {
			return err
		}
	}
	if !in.Exec {
		c, err := os.OpenFile("/dev/console", unix.O_NOFOLLOW|unix.O_CREAT|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return fmt.Errorf("create /dev/console: %w", err)
		}
		err = unix.Mount(fmt.Sprintf("/proc/self/fd/%d", peer.Fd()), fmt.Sprintf("/proc/self/fd/%d", c.Fd()), "", unix.MS_BIND, "")
		c.Close()
		if err != nil {
			return fmt.Errorf("mount /dev/console: %w", err)
		}
	}
	if err := utils.SendFile(socket, master); err != nil {
		return err
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(int(peer.Fd()), fd, 0); err != nil {
			return err
		}
	}
	return unix.IoctlSetInt(0, unix.TIOCSCTTY, 0)
}

// finalizeProcess takes the process's environment, capabilities, user
// and working directory, as runc's finalizeNamespace.
func (in *Config) finalizeProcess(caps *capabilities.Caps) error {
	chdirLater := false
	if in.Cwd != "" {
		if err := unix.Chdir(in.Cwd); err != nil {
			if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("chdir to cwd %q: %w", in.Cwd, err)
			}
			chdirLater = true
		}
	}
	env, err := processEnv(in.Env, in.UID)
	if err != nil {
		return err
	}
	in.Env = env
	if err := caps.ApplyBoundingSet(); err != nil {
		return fmt.Errorf("capability bounding set: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return err
	}
	if err := stdioToUser(in.UID); err != nil {
		return err
	}
	if err := unix.Setgroups(in.Groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setgid(in.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", in.GID, err)
	}
	if err := unix.Setuid(in.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", in.UID, err)
	}
	if chdirLater {
		if err := unix.Chdir(in.Cwd); err != nil {
			return fmt.Errorf("chdir to cwd %q: %w", in.Cwd, err)
		}
	}
	if wd, err := unix.Getwd(); err != nil || !filepath.IsAbs(wd) {
		return errors.New("the working directory is outside the container's root")
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return err
	}
	if err := caps.ApplyCaps(); err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	return nil
}

// stdioToUser gives the process's user its stdio (pipes from the agent),
// as runc does, so that it can reopen them; /dev/null is left alone.
func stdioToUser(uid int) error {
	for fd := 0; fd < 3; fd++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("stdio %d: %w", fd, err)
		}
		if int(st.Uid) == uid || isDevNull(&st) {
			continue
		}
		if err := unix.Fchown(fd, uid, -1); err != nil && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("stdio %d: %w", fd, err)
		}
	}
	return nil
}

// processEnv checks env, drops duplicates (the last wins) and an empty
// HOME, and sets HOME from the root's /etc/passwd when env has none, as
// runc's prepareEnv.
func processEnv(env []string, uid int) ([]string, error) {
	out := make([]string, 0, len(env)+1)
	seen := map[string]bool{}
	home := false
	for i := len(env) - 1; i >= 0; i-- {
		kv := env[i]
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, errors.New("invalid environment variable: missing '='")
		case k == "":
			return nil, errors.New("invalid environment variable: name cannot be empty")
		case strings.IndexByte(kv, 0) >= 0:
			return nil, fmt.Errorf("invalid environment variable %q: contains nul byte (\\x00)", k)
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		if k == "HOME" {
			if v == "" {
				continue
			}
			home = true
		}
		out = append(out, kv)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if !home {
		out = append(out, "HOME="+userHome(uid))
	}
	return out, nil
}

// userHome is uid's home in the root's /etc/passwd, or "/".
func userHome(uid int) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 6 && fields[2] == strconv.Itoa(uid) && fields[5] != "" {
			return fields[5]
		}
	}
	return "/"
}

// lookPath finds the program as exec.LookPath would with env's PATH.
func lookPath(arg0 string, env []string) (string, error) {
	if strings.Contains(arg0, "/") {
		if err := executable(arg0); err != nil {
			return "", fmt.Errorf("exec: %q: %w", arg0, err)
		}
		return arg0, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, arg0)
		if executable(p) == nil {
			if !filepath.IsAbs(p) {
				return "", fmt.Errorf("exec: %q: the program found in the current directory is not run", arg0)
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", arg0)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return os.ErrPermission
	}
	return nil
}
