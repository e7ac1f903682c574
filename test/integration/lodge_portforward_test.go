package integration

import (
	"bufio"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLodgePortForward: a container with no network serves, and the host
// reaches its server through lodge port-forward, on stdin and stdout or on
// a local port, until the container ends.
func TestLodgePortForward(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	l.must("run", "-d", "--name", "pf", "--network", "none", ref, "sh", "-c",
		"mkdir /www; echo inside > /www/index.html; exec httpd -f -p 8080 -h /www")
	defer l.run("", "rm", "-f", "pf")

	var out result
	l.eventually("the server through port-forward --stdio", func() bool {
		out = l.run("GET /index.html HTTP/1.0\r\n\r\n", "port-forward", "--stdio", "pf", "8080")
		return out.code == 0 && strings.HasSuffix(out.stdout, "\r\n\r\ninside\n")
	})
	if out := l.run("", "port-forward", "--stdio", "pf", "8081"); out.code == 0 || !strings.Contains(out.stderr, "container pf") ||
		!strings.Contains(out.stderr, "connection refused") {
		t.Errorf("a port nothing listens on: exit %d, %q; want the refusal, named", out.code, out.stderr)
	}

	cmd := exec.Command(l.bin, "port-forward", "pf", ":8080")
	cmd.Env = l.env
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	m := regexp.MustCompile(`^Forwarding from (127\.0\.0\.1:\d+) -> 8080\n$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("port-forward printed %q, %s", line, stderr.String())
	}
	for i := range 3 {
		if got := httpGet("http://" + m[1] + "/index.html"); got != "inside\n" {
			t.Errorf("GET %d through %s: %q", i, m[1], got)
		}
	}
	l.must("rm", "-f", "pf")
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	select {
	case err := <-ended:
		if err == nil || !strings.Contains(stderr.String(), "container pf ended") {
			t.Errorf("port-forward after rm: %v, %q; want it to end saying why", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("port-forward still runs 30 s after its container was removed")
	}
}
