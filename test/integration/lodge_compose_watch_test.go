package integration

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLodgeComposeWatch: lodge compose watch makes and starts the project,
// then keeps its container in step with the host's sources as develop.watch
// says: a new or changed file is synced in (ignored ones are not), a new
// directory with what it holds too, a removed one goes; a sync+restart rule
// syncs and restarts the container, whose new process sees the file; a
// rebuild rule builds the image again and makes the container from it. It
// ends at SIGINT.
func TestLodgeComposeWatch(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	dir := filepath.Join(t.TempDir(), "dev")
	files := map[string]string{
		"compose.yaml": `
services:
  app:
    image: ` + ref + `
    command: ["sh", "-c", "cat /etc/app/conf > /tmp/conf-at-start 2>/dev/null; exec sleep 600"]
    develop:
      watch:
        - path: ./src
          target: /app
          action: sync
          ignore: ["**/*.tmp"]
        - path: ./conf
          target: /etc/app
          action: sync+restart
  web:
    build: ./web
    command: ["sh", "-c", "cat /page.txt; exec sleep 600"]
    develop:
      watch:
        - path: ./web
          action: rebuild
`,
		"web/Dockerfile": "FROM " + ref + "\nCOPY page.txt /page.txt\n",
		"web/page.txt":   "first\n",
		"src/main.sh":    "echo one\n",
		"conf/conf":      "v1\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "compose.yaml")
	compose := func(args ...string) result {
		t.Helper()
		return l.run("", append([]string{"compose", "-f", file, "-p", "watchtest"}, args...)...)
	}
	defer compose("down", "--rmi", "local")

	cmd := exec.Command(l.bin, "compose", "-f", file, "-p", "watchtest", "watch")
	cmd.Env = l.env
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		ended <- cmd.Wait()
	}()
	defer cmd.Process.Kill()
	var said []string
	waitLine := func(prefix string) {
		t.Helper()
		for deadline := time.After(2 * time.Minute); ; {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("compose watch ended before %q: %q", prefix, said)
				}
				said = append(said, line)
				if strings.HasPrefix(line, prefix) {
					return
				}
			case <-deadline:
				t.Fatalf("compose watch did not say %q: %q", prefix, said)
			}
		}
	}
	waitLine("Watch enabled")
	in := func(script string) string {
		t.Helper()
		r := compose("exec", "-T", "app", "sh", "-c", script)
		return strings.TrimSpace(r.stdout)
	}
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	write("src/main.sh", "echo two\n")
	write("src/scratch.tmp", "no\n")
	write("src/lib/util.sh", "echo util\n")
	waitLine(`Syncing service "app"`)
	l.eventually("the changes in the container", func() bool {
		return in("cat /app/main.sh /app/lib/util.sh") == "echo two\necho util"
	})
	if got := in("ls /app"); got != "lib\nmain.sh" {
		t.Errorf("/app holds %q: want lib and main.sh (no ignored *.tmp)", got)
	}

	if err := os.RemoveAll(filepath.Join(dir, "src/lib")); err != nil {
		t.Fatal(err)
	}
	l.eventually("the removal in the container", func() bool { return in("ls /app") == "main.sh" })

	before := in("cat /proc/1/stat | cut -d' ' -f22")
	write("conf/conf", "v2\n")
	waitLine(" ✔ Container watchtest-app-1  Restarted")
	l.eventually("the restarted container's new process saw the synced file", func() bool {
		return in("cat /tmp/conf-at-start") == "v2"
	})
	if after := in("cat /proc/1/stat | cut -d' ' -f22"); after == before {
		t.Errorf("the container's first process started at %s before and after: not restarted", after)
	}

	// rebuild: the image built again, the container made again from it.
	write("web/page.txt", "second\n")
	waitLine(`Rebuilding service "web"`)
	l.eventually("the rebuilt container", func() bool {
		r := compose("exec", "-T", "web", "cat", "/page.txt")
		return strings.TrimSpace(r.stdout) == "second"
	})

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("compose watch at SIGINT: %v (%q)", err, said)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("compose watch outlived SIGINT")
	}
	// up --watch: attached, and a rebuilt container's output followed.
	up := exec.Command(l.bin, "compose", "-f", file, "-p", "watchtest", "up", "--watch", "web")
	up.Env = l.env
	upOut, _ := up.StdoutPipe()
	upErr, _ := up.StderrPipe()
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer up.Process.Kill()
	outLines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(upOut)
		for sc.Scan() {
			outLines <- sc.Text()
		}
		close(outLines)
	}()
	lines = make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(upErr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	said = nil
	waitLine("Watch enabled")
	waitOut := func(want string) {
		t.Helper()
		var got []string
		for deadline := time.After(2 * time.Minute); ; {
			select {
			case line, ok := <-outLines:
				if !ok {
					t.Fatalf("up --watch's output ended before %q: %q", want, got)
				}
				got = append(got, line)
				if strings.HasSuffix(line, "| "+want) {
					return
				}
			case <-deadline:
				t.Fatalf("up --watch did not print %q: %q", want, got)
			}
		}
	}
	waitOut("second")
	write("web/page.txt", "third\n")
	waitLine(`Rebuilding service "web"`)
	waitOut("third")
	up.Process.Signal(syscall.SIGINT)
	upEnded := make(chan error, 1)
	go func() { upEnded <- up.Wait() }()
	select {
	case err := <-upEnded:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("up --watch at SIGINT: %v, want exit 130", err)
		}
	case <-time.After(2 * time.Minute):
		t.Errorf("up --watch outlived SIGINT")
	}
	if st := strings.TrimSpace(l.must("ps", "-a", "--filter", "name=watchtest-web-1", "--format", "{{.Status}}")); !strings.HasPrefix(st, "Exited") {
		t.Errorf("web after up --watch's SIGINT: %q, want it stopped", st)
	}

	if r := compose("down", "--rmi", "local"); r.code != 0 {
		t.Errorf("down: %d %s", r.code, r.stderr)
	}
}
