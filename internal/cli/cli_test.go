package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/state"
)

func TestRunSpecFollowsDocker(t *testing.T) {
	im := &image.Image{Ref: image.Ref{Name: "index.docker.io/library/app:1"}}
	im.Config.Config = v1.Config{Entrypoint: []string{"/entry"}, Cmd: []string{"default"}, Env: []string{"PATH=/img", "A=image"}, WorkingDir: "/srv"}
	id := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name     string
		o        runOpts
		args     []string
		wantArgs []string
	}{
		{"image defaults", runOpts{}, nil, []string{"/entry", "default"}},
		{"args replace cmd", runOpts{}, []string{"x", "y"}, []string{"/entry", "x", "y"}},
		{"entrypoint replaces both", runOpts{entrypoint: ptr("/other")}, nil, []string{"/other"}},
		{"empty entrypoint", runOpts{entrypoint: ptr("")}, []string{"sh"}, []string{"sh"}},
	} {
		s, _, err := runSpec(im, nil, tc.o, tc.args, id)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(s.Process.Args, tc.wantArgs) {
			t.Errorf("%s: args %v, want %v", tc.name, s.Process.Args, tc.wantArgs)
		}
	}
	s, _, err := runSpec(im, nil, runOpts{env: []string{"A=flag", "B=2"}, workdir: "/tmp", memory: "64m", cpus: 1.5, tty: true,
		memoryReservation: "32m", cpuShares: 512, cpusetCpus: "0-1", groupAdd: []string{"44", "44", "7"}}, nil, id)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Linux.Resources; *r.Memory.Reservation != 32<<20 || *r.CPU.Shares != 512 || r.CPU.Cpus != "0-1" || !slices.Equal(s.Process.User.AdditionalGids, []uint32{44, 7}) {
		t.Errorf("--memory-reservation, --cpu-shares, --cpuset-cpus, --group-add: %+v %+v %v", r.Memory, r.CPU, s.Process.User.AdditionalGids)
	}
	for _, bad := range []runOpts{{cpuShares: 1}, {cpusetCpus: "all"}, {memoryReservation: "lots"}, {groupAdd: []string{"wheel"}}} {
		if _, _, err := runSpec(im, nil, bad, nil, id); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	env := strings.Join(s.Process.Env, " ")
	for _, want := range []string{"PATH=/img", "A=flag", "B=2", "HOSTNAME=" + id[:12], "TERM=xterm"} {
		if !strings.Contains(env, want) {
			t.Errorf("env %q lacks %s", env, want)
		}
	}
	if s.Process.Cwd != "/tmp" || *s.Linux.Resources.Memory.Limit != 64<<20 || *s.Linux.Resources.CPU.Quota != 150000 || !s.Process.Terminal {
		t.Errorf("cwd %s mem %d quota %d terminal %v", s.Process.Cwd, *s.Linux.Resources.Memory.Limit, *s.Linux.Resources.CPU.Quota, s.Process.Terminal)
	}
	initBinary = filepath.Join(t.TempDir(), "tini-static")
	if _, _, err := runSpec(im, nil, runOpts{init: true}, nil, id); err == nil || !strings.Contains(err.Error(), "apt-get install tini") {
		t.Errorf("--init without tini: %v", err)
	}
	os.WriteFile(initBinary, nil, 0o755)
	s, _, err = runSpec(im, nil, runOpts{init: true}, nil, id)
	if err != nil || !slices.Equal(s.Process.Args, []string{initPath, "--", "/entry", "default"}) {
		t.Errorf("--init: args %v (%v)", s.Process.Args, err)
	} else if m := s.Mounts[len(s.Mounts)-1]; m.Source != initBinary || m.Destination != initPath || !slices.Contains(m.Options, "ro") {
		t.Errorf("--init: mount %+v", m)
	}
	if _, _, err := runSpec(&image.Image{Ref: im.Ref}, nil, runOpts{}, nil, id); err == nil {
		t.Error("an image without a command and no command given was accepted")
	}
}

func ptr(s string) *string { return &s }

// -v and --mount read as docker reads them; what cannot be given is
// refused, naming the flag.
func TestParseMounts(t *testing.T) {
	for in, want := range map[string]mountReq{
		"/h:/data:ro":          {kind: "bind", src: "/h", dst: "/data", ro: true, create: true},
		"/h:/data:rw,Z":        {kind: "bind", src: "/h", dst: "/data", create: true},
		"/h:/data:ro,rprivate": {kind: "bind", src: "/h", dst: "/data", ro: true, create: true},
		"cache:/var/cache":     {kind: "volume", src: "cache", dst: "/var/cache"},
		"cache:/c:nocopy,ro":   {kind: "volume", src: "cache", dst: "/c", ro: true, nocopy: true},
		"/anon":                {kind: "volume", dst: "/anon"},
	} {
		r, err := parseVolume(in)
		r.flag = ""
		if err != nil || !reflect.DeepEqual(r, want) {
			t.Errorf("-v %s = %+v, %v; want %+v", in, r, err, want)
		}
	}
	for in, want := range map[string]mountReq{
		"type=bind,source=/h,target=/d,readonly":               {kind: "bind", src: "/h", dst: "/d", ro: true},
		"type=bind,src=/h,dst=/d,bind-propagation=rprivate":    {kind: "bind", src: "/h", dst: "/d"},
		"source=v1,target=/d,volume-nocopy":                    {kind: "volume", src: "v1", dst: "/d", nocopy: true},
		"type=volume,src=v1,dst=/d,volume-subpath=a/b,ro=true": {kind: "volume", src: "v1", dst: "/d", subpath: "a/b", ro: true},
		"type=volume,destination=/d":                           {kind: "volume", dst: "/d"},
		"type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770":      {kind: "tmpfs", dst: "/t", tmpfsOps: []string{"nosuid", "nodev", "noexec", "mode=1770", "size=1024k"}},
		`"type=bind","src=/a,b",dst=/d`:                        {kind: "bind", src: "/a,b", dst: "/d"},
	} {
		r, err := parseMount(in)
		r.flag = ""
		if err != nil || !reflect.DeepEqual(r, want) {
			t.Errorf("--mount %s = %+v, %v; want %+v", in, r, err, want)
		}
	}
	for _, bad := range []string{"a:/data", "../x:/data", "/h:rel", "/h:/d:xx", "/h:/d:rshared", "/h:/d:nocopy", "/h:/"} {
		if _, err := parseVolume(bad); err == nil {
			t.Errorf("-v %q accepted", bad)
		} else if !strings.Contains(err.Error(), "-v") {
			t.Errorf("-v %q: %v does not name the flag", bad, err)
		}
	}
	for _, bad := range []string{"type=bind,src=rel,dst=/d", "type=nfs,dst=/d", "type=tmpfs,src=/x,dst=/t", "type=volume,dst=/d,volume-opt=type=nfs",
		"type=volume,src=v,dst=/d,volume-subpath=../up", "type=volume,src=v,dst=/d,volume-subpath=/abs", "type=bind,src=/h,dst=/d,volume-nocopy",
		"type=bind,src=/h,dst=/d,bind-propagation=rshared", "type=volume,dst=/d,volume-driver=nfs", "type=bind,src=/h,dst=/d,tmpfs-size=1m",
		"type=tmpfs,dst=/t,tmpfs-mode=999", "type=volume,src=v,dst=relative", "type=volume,src=v,dst=/d,readonly=maybe"} {
		if _, err := parseMount(bad); err == nil {
			t.Errorf("--mount %q accepted", bad)
		}
	}
}

// The volumes' directory is root's alone, made so or narrowed: a
// set-user-ID file a container wrote into a volume is no host user's to
// run.
func TestVolumesDirRootOnly(t *testing.T) {
	for _, before := range []os.FileMode{0, 0o755} {
		volumesDir = filepath.Join(t.TempDir(), "volumes")
		if before != 0 {
			os.Mkdir(volumesDir, before)
			os.Chmod(volumesDir, before)
		}
		if _, err := ensureVolume("v1", false); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(volumesDir); fi.Mode().Perm() != 0o700 {
			t.Errorf("volumes' directory (before: %v) is %v, want 0700", before, fi.Mode())
		}
	}
}

// Mounts made: a -v host directory that is missing is made (as docker's
// -v makes it), --mount's is refused; a volume's subpath is a directory
// of it, never a link out of it; two mounts at one path are refused.
func TestMakeMounts(t *testing.T) {
	volumesDir = t.TempDir()
	host := filepath.Join(t.TempDir(), "made")
	spec := &specs.Spec{}
	m, err := ctrMounts(spec, []string{"/img"}, nil, runOpts{volumes: []string{host + ":/h", "named:/n:ro"},
		mounts: []string{"type=tmpfs,dst=/t"}}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(host); err != nil || !fi.IsDir() {
		t.Errorf("-v did not make the missing host directory: %v", err)
	}
	if vols, anon := m.volumes, m.anon; len(vols) != 2 || vols[0] != "named" || len(anon) != 1 || anon[0] != vols[1] {
		t.Errorf("volumes %v, anonymous %v", vols, anon)
	}
	var points []string
	for _, p := range m.points {
		points = append(points, fmt.Sprintf("%s %s %s %v", p.Type, p.Name, p.Destination, p.RW))
	}
	if want := []string{"bind  /h true", "volume named /n false", "tmpfs  /t true", "volume " + m.anon[0] + " /img true"}; !reflect.DeepEqual(points, want) {
		t.Errorf("mount points %q, want %q", points, want)
	}
	var dsts []string
	for _, m := range spec.Mounts {
		dsts = append(dsts, m.Destination+" "+m.Type+" "+strings.Join(m.Options, ","))
	}
	want := []string{"/h bind rbind,rprivate", "/n bind rbind,rprivate,ro", "/t tmpfs rw,nosuid,nodev,noexec,mode=1777", "/img bind rbind,rprivate"}
	if !reflect.DeepEqual(dsts, want) {
		t.Errorf("mounts %q, want %q", dsts, want)
	}
	if _, err := ctrMounts(&specs.Spec{}, nil, nil, runOpts{mounts: []string{"type=bind,src=" + host + "/missing,dst=/m"}}, io.Discard); err == nil {
		t.Error("--mount of a missing host path accepted")
	}
	if _, err := ctrMounts(&specs.Spec{}, nil, nil, runOpts{volumes: []string{"named:/d"}, mounts: []string{"type=tmpfs,dst=/d/"}}, io.Discard); err == nil {
		t.Error("two mounts at /d accepted")
	}
	data := filepath.Join(volumesDir, "named", "_data")
	os.MkdirAll(filepath.Join(data, "sub", "dir"), 0o755)
	os.Symlink("/etc", filepath.Join(data, "out"))
	spec = &specs.Spec{}
	if _, err := ctrMounts(spec, nil, nil, runOpts{mounts: []string{"src=named,dst=/s,volume-subpath=sub/dir"}}, io.Discard); err != nil ||
		spec.Mounts[0].Source != filepath.Join(data, "sub", "dir") {
		t.Errorf("subpath: %v, %+v", err, spec.Mounts)
	}
	for _, sub := range []string{"out", "missing"} {
		if _, err := ctrMounts(&specs.Spec{}, nil, nil, runOpts{mounts: []string{"src=named,dst=/s,volume-subpath=" + sub}}, io.Discard); err == nil {
			t.Errorf("volume-subpath %s accepted", sub)
		}
	}
}

func TestImageVolumesGetAnonymousVolumes(t *testing.T) {
	volumesDir = t.TempDir()
	im := &image.Image{Ref: image.Ref{Name: "x"}}
	im.Config.Config = v1.Config{Cmd: []string{"sh"}, Volumes: map[string]struct{}{"/data": {}, "/logs": {}}}
	s, m, err := runSpec(im, nil, runOpts{volumes: []string{"named1:/logs"}}, nil, strings.Repeat("c", 64))
	vols := m.volumes
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || vols[0] != "named1" || !strings.HasPrefix(vols[1], "anon-") {
		t.Fatalf("volumes %v: want named1 and one anonymous for /data", vols)
	}
	n := 0
	for _, m := range s.Mounts {
		if m.Destination == "/data" || m.Destination == "/logs" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d volume mounts, want 2: %+v", n, s.Mounts)
	}
	removeAnonymous(vols, "")
	if _, err := os.Stat(filepath.Join(volumesDir, vols[1])); !os.IsNotExist(err) {
		t.Errorf("anonymous volume not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(volumesDir, "named1")); err != nil {
		t.Errorf("named volume removed with the anonymous ones: %v", err)
	}
}

// A run refused after the image's anonymous volumes were made (a bad
// --memory) leaves none of them.
func TestRefusedRunSpecLeavesNoVolume(t *testing.T) {
	volumesDir = t.TempDir()
	im := &image.Image{Ref: image.Ref{Name: "x"}}
	im.Config.Config = v1.Config{Cmd: []string{"sh"}, Volumes: map[string]struct{}{"/data": {}}}
	if _, _, err := runSpec(im, nil, runOpts{memory: "lots"}, nil, strings.Repeat("d", 64)); err == nil {
		t.Fatal("--memory lots accepted")
	}
	if ents, _ := os.ReadDir(volumesDir); len(ents) != 0 {
		t.Errorf("volumes left by a refused run: %v", ents)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"512m": 512 << 20, "1g": 1 << 30, "100k": 100 << 10, "4096": 4096, "2G": 2 << 30} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1m", "lots", "0"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}

func TestNames(t *testing.T) {
	if n := normalise("busybox"); n != "index.docker.io/library/busybox:latest" {
		t.Errorf("normalise(busybox) = %s", n)
	}
	if d := displayName("index.docker.io/library/busybox:latest"); d != "busybox:latest" {
		t.Errorf("displayName = %s", d)
	}
	if r, tag := splitName("127.0.0.1:5000/test/app:v1"); r != "127.0.0.1:5000/test/app" || tag != "v1" {
		t.Errorf("splitName = %s %s", r, tag)
	}
	if id := strings.Repeat("a", 12); normalise(id) != id {
		t.Errorf("an image ID was turned into a name: %s", normalise(id))
	}
	if humanDuration(3*time.Second) != "3 seconds" || humanDuration(90*time.Minute) != "About an hour" {
		t.Errorf("humanDuration: %s, %s", humanDuration(3*time.Second), humanDuration(90*time.Minute))
	}
}

func TestJSONLogRotates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "json.log")
	l, err := openJSONLog(p)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 1000) + "\n"
	for range (2*logMax)/1000 + 10 {
		l.write("stdout", []byte(line))
	}
	for _, f := range []string{p, p + ".1"} {
		fi, err := os.Stat(f)
		if err != nil || fi.Size() > logMax {
			t.Errorf("%s: %v, size %d; want at most %d", f, err, fi.Size(), logMax)
		}
	}
	lines := readLogLines(p)
	if len(lines) == 0 || lines[0].Log != line || lines[0].Stream != "stdout" {
		t.Errorf("read back %d lines, first %+v", len(lines), lines[0])
	}
}

// TestDetachedLoggerWaitsForTheContainer: the helper of `run -d` must not
// take a container the runtime has not yet recorded for one that ended
// (it then deleted the container it had just watched start).
func TestDetachedLoggerWaitsForTheContainer(t *testing.T) {
	root, id := t.TempDir(), strings.Repeat("cd", 32)
	createdR, createdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	type end struct {
		code int
		why  string
	}
	done := make(chan end, 1)
	go func() { c, w := awaitEnd(root, id, createdR); done <- end{c, w} }()
	select {
	case e := <-done:
		t.Fatalf("before the container was created: ended with %d %q", e.code, e.why)
	case <-time.After(500 * time.Millisecond):
	}
	// Created and run to its end: exit status 3 in the runtime's record.
	os.MkdirAll(filepath.Join(root, id), 0o700)
	os.WriteFile(filepath.Join(root, id, "state.json"), []byte(`{"id":"`+id+`","status":"stopped","exit_status":3}`), 0o600)
	createdW.Write([]byte{1})
	createdW.Close()
	select {
	case e := <-done:
		if e.code != 3 || e.why != "" {
			t.Errorf("ended with %d %q, want 3", e.code, e.why)
		}
	case <-time.After(time.Minute):
		t.Fatal("the container ended and the helper did not see it")
	}

	// lodge died before the container was made: the helper says so.
	createdR, createdW, _ = os.Pipe()
	createdW.Close()
	if code, why := awaitEnd(root, strings.Repeat("ef", 32), createdR); code != 137 || !strings.Contains(why, "before the container was created") {
		t.Errorf("lodge gone before create: %d %q", code, why)
	}
}

// --volumes-from mounts another container's volumes and binds (not its
// tmpfs) at their paths, as they were or as :ro says, where -v puts
// nothing; an anonymous volume two containers share goes with neither's
// rm -v while the other mounts it.
func TestVolumesFrom(t *testing.T) {
	volumesDir, containersDir = t.TempDir(), t.TempDir()
	host := t.TempDir()
	src := &ctrRecord{ID: strings.Repeat("a", 64), Name: "data", Volumes: []string{"anon-shared", "named"}, Mounts: []mountPoint{
		{Type: "volume", Name: "anon-shared", Destination: "/var/lib/db", RW: true},
		{Type: "volume", Name: "named", Destination: "/n", RW: false},
		{Type: "bind", Source: host, Destination: "/h", RW: true},
		{Type: "tmpfs", Destination: "/t", RW: true},
	}}
	if err := os.MkdirAll(ctrDir(src.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := src.save(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"anon-shared", "named"} {
		if _, err := ensureVolume(v, v == "anon-shared"); err != nil {
			t.Fatal(err)
		}
	}
	spec := &specs.Spec{}
	m, err := ctrMounts(spec, nil, nil, runOpts{volumesFrom: []string{"data:ro"}, volumes: []string{"other:/n"}}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range m.points {
		got = append(got, fmt.Sprintf("%s %s%s %s %v", p.Type, p.Name, p.Source, p.Destination, p.RW))
	}
	want := []string{"volume other" + filepath.Join(volumesDir, "other", "_data") + " /n true",
		"volume anon-shared" + filepath.Join(volumesDir, "anon-shared", "_data") + " /var/lib/db false",
		"bind " + host + " /h false"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mounts %q\nwant %q", got, want)
	}
	if len(m.anon) != 0 {
		t.Errorf("another's anonymous volume counted as this one's: %v", m.anon)
	}
	// The sharing container's rm -v leaves it; the last one's takes it.
	user := &ctrRecord{ID: strings.Repeat("b", 64), Name: "user", Volumes: m.volumes}
	os.MkdirAll(ctrDir(user.ID), 0o700)
	user.save()
	removeAnonymous(user.Volumes, user.ID)
	if _, err := os.Stat(filepath.Join(volumesDir, "anon-shared")); err != nil {
		t.Errorf("rm -v of the sharer removed the other's anonymous volume: %v", err)
	}
	os.RemoveAll(ctrDir(user.ID))
	os.RemoveAll(ctrDir(src.ID))
	removeAnonymous(src.Volumes, src.ID)
	if _, err := os.Stat(filepath.Join(volumesDir, "anon-shared")); !os.IsNotExist(err) {
		t.Errorf("the last user's rm -v left the anonymous volume: %v", err)
	}
	for _, bad := range []string{"nobody", "data:rx"} {
		if _, err := ctrMounts(&specs.Spec{}, nil, nil, runOpts{volumesFrom: []string{bad}}, io.Discard); err == nil {
			t.Errorf("--volumes-from %s accepted", bad)
		}
	}
	// A record from before Lodge kept its mounts: its bundle's volume
	// mounts (not its other binds).
	oldRec := &ctrRecord{ID: strings.Repeat("c", 64), Name: "older", Volumes: []string{"named"}}
	os.MkdirAll(bundleDir(oldRec.ID), 0o700)
	oldRec.save()
	state.Write(filepath.Join(bundleDir(oldRec.ID), "config.json"), &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/n", Type: "bind", Source: filepath.Join(volumesDir, "named", "_data"), Options: []string{"rbind", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(ctrDir(oldRec.ID), "hosts")},
	}})
	m, err = ctrMounts(&specs.Spec{}, nil, nil, runOpts{volumesFrom: []string{"older"}}, io.Discard)
	if err != nil || len(m.points) != 1 || m.points[0].Name != "named" || m.points[0].Destination != "/n" || m.points[0].RW {
		t.Errorf("--volumes-from a record without mounts: %+v, %v", m.points, err)
	}
}

// volume create --label and volume ls --filter, as docker's: labels kept
// (a second create with others refused), dangling= by whether a
// container mounts it, name= a part of the name.
func TestVolumeLabelsAndFilters(t *testing.T) {
	volumesDir, containersDir = t.TempDir(), t.TempDir()
	web, _ := ensureVolume("web-data", false)
	if _, err := labelVolume(web, map[string]string{"tier": "web"}); err != nil {
		t.Fatal(err)
	}
	again, _ := ensureVolume("web-data", false) // as a second create finds it
	if _, err := labelVolume(again, map[string]string{"tier": "db"}); err == nil {
		t.Error("a second create with other labels accepted")
	}
	ensureVolume("db-data", false)
	user := &ctrRecord{ID: strings.Repeat("d", 64), Name: "user", Volumes: []string{"db-data"}}
	os.MkdirAll(ctrDir(user.ID), 0o700)
	user.save()
	vs, _ := listVolumes()
	for filters, want := range map[string]string{
		"":                              "db-data web-data",
		"dangling=true":                 "web-data",
		"dangling=false":                "db-data",
		"name=db":                       "db-data",
		"label=tier":                    "web-data",
		"label=tier=web,dangling=true":  "web-data",
		"label=tier=db":                 "",
		"name=web,name=db,driver=local": "db-data web-data",
	} {
		var fs []string
		if filters != "" {
			fs = strings.Split(filters, ",")
		}
		keep, err := volumeFilter(fs)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range vs {
			if keep(v) {
				got = append(got, v.Name)
			}
		}
		if strings.Join(got, " ") != want {
			t.Errorf("--filter %s: %q, want %q", filters, got, want)
		}
	}
	for _, bad := range []string{"dangling=maybe", "size=1", "name"} {
		if _, err := volumeFilter([]string{bad}); err == nil {
			t.Errorf("--filter %s accepted", bad)
		}
	}
}

// --label-file: KEY=VALUE lines, blank lines and comments skipped.
func TestReadLabelFiles(t *testing.T) {
	f := filepath.Join(t.TempDir(), "labels")
	os.WriteFile(f, []byte("# team\ntier=web\n\n  owner=ops  \n"), 0o644)
	got, err := readLabelFiles([]string{f})
	if err != nil || !slices.Equal(got, []string{"tier=web", "owner=ops"}) {
		t.Errorf("readLabelFiles = %q, %v", got, err)
	}
	if _, err := readLabelFiles([]string{f + ".missing"}); err == nil {
		t.Error("a missing label file accepted")
	}
}
