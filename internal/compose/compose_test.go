package compose

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// project is a Compose file's project, loaded as up loads it.
func project(t *testing.T, yaml string) *types.Project {
	t.Helper()
	o, _ := load(t, yaml, map[string]string{})
	p, err := Load(context.Background(), *o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// load writes a Compose file (and any other files) into a directory named
// "shop" and loads it.
func load(t *testing.T, yaml string, files map[string]string) (*Options, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shop")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files["compose.yaml"] = yaml
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &Options{WorkDir: dir}, nil
}

const shop = `
services:
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: ${PW:-secret}
      EMPTY:
    volumes:
      - pgdata:/var/lib/postgresql/data
      - /var/lib/postgresql/run
      - type: volume
        source: pgdata
        target: /seed
        volume: {nocopy: true, subpath: "a,b"}
      - type: bind
        source: ./conf
        target: /conf
        read_only: true
        bind: {create_host_path: false}
    secrets: [dbpass]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready"]
  web:
    build:
      context: ./web
      args: {VERSION: "2"}
    ports:
      - "8080:80"
      - "127.0.0.1:9000:9000/udp"
      - "3000"
    entrypoint: ["/bin/app", "--serve"]
    command: ["--port", "80"]
    env_file: [web.env]
    networks:
      front:
        aliases: [www]
        ipv4_address: 10.200.0.10
    depends_on:
      db: {condition: service_healthy}
    tmpfs: [/tmp]
    read_only: true
    cap_drop: [ALL]
    mem_limit: 256m
    mem_reservation: 64m
    cpu_shares: 512
    cpuset: "0"
    group_add: [audio]
    stop_grace_period: 30s
    restart: unless-stopped
    labels: {tier: web}
    extra_hosts: ["gw:10.0.0.1"]
volumes:
  pgdata:
networks:
  front:
    ipam:
      config: [{subnet: 10.200.0.0/16}]
secrets:
  dbpass:
    file: ./dbpass.txt
`

func TestRunArgs(t *testing.T) {
	o, _ := load(t, shop, map[string]string{"web.env": "MODE=prod\n", "dbpass.txt": "pw\n"})
	p, err := Load(context.Background(), *o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "shop" {
		t.Errorf("project name %q, want the directory's", p.Name)
	}
	order, err := Order(p, nil)
	if err != nil || !slices.Equal(order, []string{"db", "web"}) {
		t.Fatalf("order %v %v, want db before web", order, err)
	}

	web := p.Services["web"]
	args, _, err := RunArgs(p, web, Container{Name: "shop-web-1", Hash: "h", Number: 1, Detach: true})
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{
		"-d --name shop-web-1 --pull never",
		"--label com.docker.compose.project=shop", "--label com.docker.compose.service=web",
		"--label com.docker.compose.config-hash=h", "--label com.docker.compose.oneoff=False", "--label tier=web",
		"--network name=shop_front,ip=10.200.0.10 --network-alias web --network-alias www",
		"-e MODE=prod", "--read-only", "--cap-drop ALL", "--restart unless-stopped",
		"--stop-timeout 30", "-m 268435456", "--tmpfs /tmp", "--add-host gw:10.0.0.1",
		"--memory-reservation 67108864", "--cpu-shares 512", "--cpuset-cpus 0", "--group-add audio",
		"-p 8080:80", "-p 127.0.0.1:9000:9000/udp", "-p 3000",
		"--entrypoint /bin/app shop-web --serve --port 80",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("web's run lacks %q:\n%s", want, line)
		}
	}
	if !strings.HasSuffix(line, "shop-web --serve --port 80") {
		t.Errorf("image and command are not last:\n%s", line)
	}

	db := p.Services["db"]
	args, _, err = RunArgs(p, db, Container{Name: "x", Number: 1, Oneoff: true, Command: []string{"psql"}})
	if err != nil {
		t.Fatal(err)
	}
	line = strings.Join(args, " ")
	for _, want := range []string{
		"-e POSTGRES_PASSWORD=secret", "-v shop_pgdata:/var/lib/postgresql/data", "-v /var/lib/postgresql/run",
		"--label com.docker.compose.oneoff=True", "--network shop_default --network-alias db",
		"/dbpass.txt:/run/secrets/dbpass:ro", "postgres:16 psql", "--health-cmd pg_isready",
		`--mount type=volume,source=shop_pgdata,target=/seed,readonly=false,volume-nocopy=true,"volume-subpath=a,b"`,
		"/conf,target=/conf,readonly=true",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("db's run lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "EMPTY") || strings.Contains(line, " -d ") || strings.Contains(line, "--restart") {
		t.Errorf("db's one-off run has an unset variable, -d or a restart policy:\n%s", line)
	}
	if Subnet(p.Networks["front"]) != "10.200.0.0/16" {
		t.Errorf("front's subnet: %q", Subnet(p.Networks["front"]))
	}
	if Image(p, web) != "shop-web" || ContainerName(p, web, 2) != "shop-web-2" {
		t.Errorf("names: %s %s", Image(p, web), ContainerName(p, web, 2))
	}
}

func TestHash(t *testing.T) {
	o, _ := load(t, shop, map[string]string{"web.env": "MODE=prod\n", "dbpass.txt": "pw\n"})
	p, err := Load(context.Background(), *o)
	if err != nil {
		t.Fatal(err)
	}
	db := p.Services["db"]
	h := Hash(db, "img1")
	if Hash(db, "img1") != h {
		t.Error("the hash is not stable")
	}
	if Hash(db, "img2") == h {
		t.Error("a new image does not change the hash")
	}
	changed := db
	changed.Environment = nil
	if Hash(changed, "img1") == h {
		t.Error("a changed environment does not change the hash")
	}
	scaled := db
	scaled.SetScale(3)
	if Hash(scaled, "img1") != h {
		t.Error("scaling changes the hash (the containers there need not be made again)")
	}
}

func TestRefusals(t *testing.T) {
	for name, svc := range map[string]string{
		"host network":   "    network_mode: host\n",
		"devices":        "    devices: [/dev/fuse]\n",
		"pid":            "    pid: host\n",
		"fixed address":  "    networks:\n      a: {ipv6_address: fd00::5}\n",
		"volume driver":  "    volumes: [nfs:/data]\n",
		"env secret":     "    secrets: [token]\n",
		"other platform": "    platform: linux/arm64\n",
		"mac address":    "    mac_address: 02:42:ac:11:00:02\n",
		"realtime":       "    cpu_rt_runtime: 1000\n",
		"device rules":   "    device_cgroup_rules: ['c 1:3 mr']\n",
		"host cgroup":    "    cgroup: host\n",
	} {
		t.Run(name, func(t *testing.T) {
			yaml := "services:\n  app:\n    image: busybox\n" + svc +
				"networks:\n  a: {}\n  b: {}\n  c: {internal: true}\n" +
				"volumes:\n  nfs: {driver: nfs}\n" +
				"secrets:\n  token: {environment: TOKEN}\n"
			p := project(t, yaml)
			_, _, err := RunArgs(p, p.Services["app"], Container{Name: "x"})
			if err == nil || !strings.Contains(err.Error(), "app") && !strings.Contains(err.Error(), "network c") && !strings.Contains(err.Error(), "volume nfs") {
				t.Errorf("not refused with the service named: %v", err)
			}
		})
	}
}

// A service on two networks joins both, the one of higher priority
// first (its default route's), with its aliases on each.
func TestTwoNetworks(t *testing.T) {
	yaml := "services:\n  app:\n    image: busybox\n    networks:\n      back: {aliases: [store]}\n      front: {priority: 10}\n" +
		"networks:\n  front: {}\n  back: {}\n"
	p := project(t, yaml)
	args, _, err := RunArgs(p, p.Services["app"], Container{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	if want := "--network " + p.Name + "_front --network " + p.Name + "_back --network-alias app --network-alias store"; !strings.Contains(line, want) {
		t.Errorf("run args lack %q:\n%s", want, line)
	}
}

func TestOrder(t *testing.T) {
	yaml := `
services:
  a: {image: x, depends_on: [b, c]}
  b: {image: x, depends_on: [c]}
  c: {image: x}
  d: {image: x}
`
	p := project(t, yaml)
	if got, _ := Order(p, nil); !slices.Equal(got, []string{"c", "b", "a", "d"}) {
		t.Errorf("order %v", got)
	}
	if got, _ := Order(p, []string{"b"}); !slices.Equal(got, []string{"c", "b"}) {
		t.Errorf("order of b %v, want its dependency first", got)
	}
	if _, err := Order(p, []string{"nope"}); err == nil {
		t.Error("an unknown service is taken")
	}
}

func TestNoComposeFile(t *testing.T) {
	_, err := Load(context.Background(), Options{WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "compose.yaml") {
		t.Errorf("no file: %v", err)
	}
}

// volumes_from: a service's first container (by its name), or a
// container by its own, with the mode given.
func TestVolumesFrom(t *testing.T) {
	p := project(t, `
services:
  db:
    image: postgres:16
  backup:
    image: busybox
    volumes_from: ["db:ro", "container:keeper"]
`)
	args, _, err := RunArgs(p, p.Services["backup"], Container{Name: "x", Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	if line := strings.Join(args, " "); !strings.Contains(line, "--volumes-from "+p.Name+"-db-1:ro --volumes-from keeper") {
		t.Errorf("volumes_from:\n%s", line)
	}
	if order, err := Order(p, nil); err != nil || !slices.Equal(order, []string{"db", "backup"}) {
		t.Errorf("order %v %v, want db (whose volumes backup mounts) first", order, err)
	}
}

// A recreated container's anonymous volumes go to its successor: at the
// service's anonymous volume of that path, and at a path the service
// mounts nothing at (the image's VOLUME); not where the service now
// mounts something else.
func TestAnonymousVolumesCarried(t *testing.T) {
	p := project(t, `
services:
  db:
    image: postgres:16
    volumes:
      - /var/lib/run
      - named:/now-named
volumes:
  named:
`)
	args, _, err := RunArgs(p, p.Services["db"], Container{Name: "x", Number: 1, Anonymous: map[string]string{
		"/var/lib/run": "anon-1", "/var/lib/postgresql/data": "anon-2", "/now-named": "anon-3"}})
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"-v anon-1:/var/lib/run", "-v anon-2:/var/lib/postgresql/data", "-v " + p.Name + "_named:/now-named"} {
		if !strings.Contains(line, want) {
			t.Errorf("lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "anon-3") || strings.Contains(line, "-v /var/lib/run ") {
		t.Errorf("carried over where it should not:\n%s", line)
	}
}

// post_start and pre_stop hooks run as lodge exec in the container, with
// their user, directory and environment; a privileged one, pre_start and
// provider are refused.
func TestHooks(t *testing.T) {
	p := project(t, `
services:
  app:
    image: busybox
    post_start:
      - command: ["sh", "-c", "chown -R 1000 /data"]
        user: root
        working_dir: /data
        environment: {MODE: init, EMPTY: ""}
  bad:
    image: busybox
    pre_stop:
      - command: ["true"]
        privileged: true
`)
	args, err := HookArgs(p.Services["app"].PostStart[0], "proj-app-1")
	if err != nil || strings.Join(args, " ") != "-u root -w /data -e EMPTY= -e MODE=init proj-app-1 sh -c chown -R 1000 /data" {
		t.Errorf("HookArgs = %q, %v", args, err)
	}
	if _, _, err := RunArgs(p, p.Services["bad"], Container{Name: "x"}); err == nil || !strings.Contains(err.Error(), "privileged") {
		t.Errorf("a privileged hook: %v", err)
	}
}

// cpu_quota (over cpu_period) becomes --cpus; keys that mean nothing in a
// VM of the container's own are warned about, not dropped silently.
func TestQuotaAndWarnings(t *testing.T) {
	p := project(t, `
services:
  app:
    image: busybox
    cpu_quota: 50000
    cpu_period: 200000
    memswap_limit: 1g
    oom_score_adj: 100
`)
	args, warnings, err := RunArgs(p, p.Services["app"], Container{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if line := strings.Join(args, " "); !strings.Contains(line, "--cpus 0.25") {
		t.Errorf("cpu_quota 50000 over cpu_period 200000:\n%s", line)
	}
	if w := strings.Join(warnings, "\n"); !strings.Contains(w, "memswap_limit") || !strings.Contains(w, "oom_score_adj") {
		t.Errorf("warnings:\n%s", w)
	}
}
