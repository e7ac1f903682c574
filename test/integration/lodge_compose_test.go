package integration

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLodgeCompose: `lodge compose` runs a three-service application as
// docker compose would: a one-shot seeding job (service_completed_
// successfully), a server the next waits for (service_healthy, its
// healthcheck run in it), a service built from a Dockerfile that finds
// the server by an alias on the project's network and publishes a port;
// a named volume shared by two of them. A second `up` leaves what did not
// change running and makes again what did; `run` gives a one-off's exit
// code; `up --exit-code-from` follows the output and returns a service's
// code; `down -v --rmi local` leaves no container, network, bridge,
// namespace, volume or built image; a file asking what lodge cannot give
// is refused before anything is made.
func TestLodgeCompose(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	dir := filepath.Join(t.TempDir(), "shop")
	files := map[string]string{
		"compose.yaml": `
services:
  seed:
    image: ` + ref + `
    command: ["sh", "-c", "echo seeded-$$GREETING > /data/index.html; echo run >> /scratch/runs; echo runs=$$(wc -l < /scratch/runs)"]
    environment:
      GREETING: ${GREETING:-unset}
    volumes: [data:/data, /scratch]
  db:
    image: ` + ref + `
    command: httpd -f -p 80 -h /www
    volumes: ["data:/www:ro", "./hooks:/hooks"]
    post_start:
      - command: ["sh", "-c", "echo $$STAGE > /tmp/hooked"]
        environment: {STAGE: started}
    pre_stop:
      - command: ["sh", "-c", "hostname >> /hooks/pre-stop"]
    networks:
      default:
        aliases: [database]
    depends_on:
      seed: {condition: service_completed_successfully}
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1/"]
      interval: 1s
      retries: 60
  web:
    build: ./web
    ports: ["127.0.0.1::8080"]
    environment:
      UPSTREAM: http://database/
    depends_on:
      db: {condition: service_healthy}
volumes:
  data:
`,
		".env":              "GREETING=hello\n",
		"bye.env":           "GREETING=bye\n",
		"web/Dockerfile":    "FROM " + ref + "\nCOPY serve.sh /serve.sh\nCMD [\"sh\", \"/serve.sh\"]\n",
		"web/serve.sh":      "mkdir -p /www && wget -qO /www/index.html \"$UPSTREAM\"; echo \"web got: $(cat /www/index.html)\"; exec httpd -f -p 8080 -h /www\n",
		"tests/compose.yml": "services:\n  srv:\n    image: " + ref + "\n    command: sh -c 'echo srv up; trap \"echo srv stopping; exit 0\" TERM; while :; do sleep 1; done'\n  tester:\n    image: " + ref + "\n    command: sh -c 'echo testing; sleep 1; exit 7'\n    depends_on: [srv]\n",
		"bad/compose.yml":   "services:\n  app:\n    image: " + ref + "\n    network_mode: host\n  other:\n    image: " + ref + "\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	linksBefore := hostLinks(t)
	file := filepath.Join(dir, "compose.yaml")
	compose := func(args ...string) result {
		t.Helper()
		return l.run("", append([]string{"compose", "-f", file, "-p", "lodgetest"}, args...)...)
	}
	defer compose("down", "-v", "--rmi", "local")

	// compose events follows the project's containers: db's alone here.
	follow := exec.Command(l.bin, "compose", "-f", file, "-p", "lodgetest", "events", "--json", "db")
	follow.Env = l.env
	followOut, _ := follow.StdoutPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	followed := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(followOut)
		for sc.Scan() {
			var e struct{ Service, Action string }
			json.Unmarshal(sc.Bytes(), &e)
			followed <- e.Service + " " + e.Action
		}
	}()
	time.Sleep(time.Second) // it follows

	r := compose("up", "-d")
	if r.code != 0 {
		t.Fatalf("up -d: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var events []string
	for deadline := time.After(10 * time.Second); !slices.Contains(events, "db health_status: healthy"); {
		select {
		case e := <-followed:
			events = append(events, e)
			continue
		case <-deadline:
		}
		break
	}
	if len(events) < 3 || events[0] != "db create" || events[1] != "db start" || slices.ContainsFunc(events, func(e string) bool { return !strings.HasPrefix(e, "db ") }) {
		t.Errorf("compose events --json db: %q; want db's create, start, ..., health_status: healthy", events)
	}
	for _, want := range []string{"Network lodgetest_default  Created", "Volume lodgetest_data  Created", "lodgetest-seed-1  Exited", "lodgetest-db-1  Healthy", "lodgetest-web-1  Started"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("up -d did not say %q:\n%s", want, r.stderr)
		}
	}
	if v := l.must("volume", "ls", "-q", "--filter", "label=com.docker.compose.project=lodgetest"); v != "lodgetest_data\n" {
		t.Errorf("the project's volume by its label: %q", v)
	}
	ps := compose("ps", "-a").stdout
	for _, want := range []string{"lodgetest-seed-1", "Exited (0)", "lodgetest-db-1", "(healthy)", "lodgetest-web-1"} {
		if !strings.Contains(ps, want) {
			t.Errorf("ps -a lacks %q:\n%s", want, ps)
		}
	}
	// web read what seed wrote, from db, by its alias.
	l.eventually("web's first line", func() bool { return strings.Contains(l.must("logs", "lodgetest-web-1"), "web got: seeded-hello") })
	hostPort := strings.TrimSpace(compose("port", "web", "8080").stdout)
	if i := strings.LastIndex(hostPort, ":"); i < 0 || httpGet("http://127.0.0.1:"+hostPort[i+1:]+"/") != "seeded-hello\n" {
		t.Errorf("web's published port %q does not serve what it fetched", hostPort)
	}
	if out := compose("exec", "-T", "web", "wget", "-qO-", "http://db/"); out.stdout != "seeded-hello\n" {
		t.Errorf("exec in web, db by its service name: %q %s", out.stdout, out.stderr)
	}
	if out := compose("logs", "web"); !strings.Contains(out.stdout, "lodgetest-web-1 | web got: seeded-hello") {
		t.Errorf("compose logs web:\n%s", out.stdout)
	}

	// Nothing changed: left running. seed's environment changed: made again.
	webID := l.inspect("lodgetest-web-1").ID
	r = l.run("", "compose", "-f", file, "-p", "lodgetest", "--env-file", filepath.Join(dir, "bye.env"), "up", "--wait", "--wait-timeout", "120")
	if r.code != 0 || !strings.Contains(r.stderr, "lodgetest-web-1  Running") || !strings.Contains(r.stderr, "lodgetest-seed-1  Recreate") {
		t.Errorf("up -d again: exit %d\n%s", r.code, r.stderr)
	}
	if l.inspect("lodgetest-web-1").ID != webID {
		t.Error("an unchanged service's container was made again")
	}
	// The recreated seed has its predecessor's anonymous volume, and no
	// other is left.
	if out := l.must("logs", "lodgetest-seed-1"); out != "runs=2\n" {
		t.Errorf("the recreated seed's anonymous volume: %q, want its predecessor's with one more run", out)
	}
	if vs := strings.Fields(l.must("volume", "ls", "-q")); len(vs) != 2 {
		t.Errorf("volumes after the recreate: %q, want the named one and one anonymous", vs)
	}
	// --scale: a second db, then back to one.
	if r := compose("up", "-d", "--no-deps", "--scale", "db=2", "db"); r.code != 0 || !strings.Contains(compose("ps").stdout, "lodgetest-db-2") {
		t.Errorf("--scale db=2: %d %s", r.code, r.stderr)
	}
	if r := compose("up", "-d", "--no-deps", "db"); r.code != 0 || strings.Contains(compose("ps", "-a").stdout, "lodgetest-db-2") {
		t.Errorf("back to one db: %d %s", r.code, r.stderr)
	}
	// Hooks: post_start ran in each db as it started, pre_stop in db-2
	// before it was stopped and removed.
	if out := compose("exec", "-T", "db", "cat", "/tmp/hooked"); out.stdout != "started\n" {
		t.Errorf("db's post_start hook: %q %s", out.stdout, out.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hooks", "pre-stop")); err != nil || strings.Count(string(b), "\n") != 1 {
		t.Errorf("db-2's pre_stop hook: %q, %v", b, err)
	}
	if out := compose("run", "--rm", "--no-deps", "db", "cat", "/www/index.html"); out.stdout != "seeded-bye\n" {
		t.Errorf("a one-off of db sees the volume as seed left it: %q %s", out.stdout, out.stderr)
	}
	if out := compose("run", "--rm", "--no-deps", "db", "sh", "-c", "exit 3"); out.code != 3 {
		t.Errorf("a one-off's exit code: %d %s", out.code, out.stderr)
	}
	if ps := l.must("ps", "-a"); strings.Contains(ps, "-run-") {
		t.Errorf("run --rm left its container:\n%s", ps)
	}

	r = compose("down", "-v", "--rmi", "local")
	if r.code != 0 {
		t.Fatalf("down: exit %d\n%s", r.code, r.stderr)
	}
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Errorf("down left containers:\n%s", ps)
	}
	if v := l.must("volume", "ls", "-q"); strings.Contains(v, "lodgetest") {
		t.Errorf("down -v left volumes:\n%s", v)
	}
	l.must("volume", "create", "unused")
	if out := l.must("volume", "prune", "-f", "-a"); !strings.Contains(out, "unused") || l.must("volume", "ls", "-q") != "" {
		t.Errorf("volume prune -a: %s", out)
	}
	if n := l.must("network", "ls"); strings.Contains(n, "lodgetest") {
		t.Errorf("down left its network:\n%s", n)
	}
	if im := l.must("images"); strings.Contains(im, "lodgetest-web") {
		t.Errorf("down --rmi local left the built image:\n%s", im)
	}
	if after := hostLinks(t); len(after) != len(linksBefore) {
		t.Errorf("host interfaces after down: %v, before up: %v", after, linksBefore)
	}
	for _, e := range mustReadDir(t, "/run/netns") {
		if strings.HasPrefix(e, "lodge-") {
			t.Errorf("network namespace left after down: %s", e)
		}
	}

	// Attached: the services' output, each line after its container's
	// name, until tester ends; the others are stopped, and its code is
	// compose's.
	tests := filepath.Join(dir, "tests", "compose.yml")
	r = l.run("", "compose", "-f", tests, "up", "--exit-code-from", "tester")
	if r.code != 7 || !strings.Contains(r.stdout, "tests-tester-1 | testing") || !strings.Contains(r.stdout, "tests-srv-1    | srv stopping") {
		t.Errorf("up --exit-code-from tester: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if r := l.run("", "compose", "-f", tests, "down"); r.code != 0 {
		t.Errorf("down: %s", r.stderr)
	}

	// Refused before anything is made.
	nets := l.must("network", "ls")
	r = l.run("", "compose", "-f", filepath.Join(dir, "bad", "compose.yml"), "up", "-d")
	if r.code == 0 || !strings.Contains(r.stderr, `network_mode "host"`) {
		t.Errorf("a host-network service: exit %d %s", r.code, r.stderr)
	}
	if l.must("network", "ls") != nets || l.must("ps", "-a", "-q") != "" {
		t.Error("a refused up made something")
	}
}

// TestLodgeHealthcheck: run's --health-* flags make the container's
// monitor check it: starting, unhealthy after its retries fail, healthy
// once the check passes; ps shows it and filters by it, inspect has it,
// and --no-healthcheck drops it.
func TestLodgeHealthcheck(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	l.must("run", "-d", "--name", "checked", "--network", "none", "--health-cmd", "cat /ok", "--health-interval", "1s", "--health-retries", "2", ref, "sleep", "300")
	health := func() string {
		return strings.TrimSpace(l.must("inspect", "-f", "{{.State.Health.Status}}", "checked"))
	}
	l.eventually("unhealthy after two failed checks", func() bool { return health() == "unhealthy" })
	if ps := l.must("ps"); !strings.Contains(ps, "(unhealthy)") {
		t.Errorf("ps does not show the health:\n%s", ps)
	}
	if out := l.must("inspect", "-f", "{{range .State.Health.Log}}{{.ExitCode}} {{end}}", "checked"); !strings.HasPrefix(out, "1 1") {
		t.Errorf("the checks' exit codes: %q", out)
	}
	l.must("exec", "checked", "sh", "-c", "echo fine > /ok")
	l.eventually("healthy once the check passes", func() bool { return health() == "healthy" })
	if ids := l.must("ps", "-q", "--filter", "health=healthy"); !strings.Contains(ids, l.inspect("checked").ID[:12]) {
		t.Errorf("ps --filter health=healthy: %q", ids)
	}
	l.must("run", "-d", "--name", "unchecked", "--network", "none", "--health-cmd", "false", "--no-healthcheck", ref, "sleep", "300")
	if ps := l.must("ps", "-q", "--filter", "health=none"); !strings.Contains(ps, l.inspect("unchecked").ID[:12]) || strings.Contains(ps, l.inspect("checked").ID[:12]) {
		t.Errorf("ps --filter health=none: %q", ps)
	}
	if r := l.run("", "run", "--rm", "--health-retries", "2", ref, "true"); r.code != 125 || !strings.Contains(r.stderr, "--health-cmd") {
		t.Errorf("--health-retries with no check: %d %s", r.code, r.stderr)
	}
	l.must("rm", "-f", "checked", "unchecked")
}
