package integration

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// volumeImage is busybox with /srv/app (1000:1000, 0750: a file, a hard
// link to it, and a device node) declared a VOLUME, served from a
// registry of the test's.
func volumeImage(t *testing.T) string {
	t.Helper()
	ref, _ := busyboxWith(t, "test/vol:v1", []tarEntry{
		{tar.Header{Typeflag: tar.TypeDir, Name: "srv/", Mode: 0o755}, ""},
		{tar.Header{Typeflag: tar.TypeDir, Name: "srv/app/", Mode: 0o750, Uid: 1000, Gid: 1000}, ""},
		{tar.Header{Typeflag: tar.TypeReg, Name: "srv/app/conf", Mode: 0o640, Uid: 1000, Gid: 1000}, "seed\n"},
		{tar.Header{Typeflag: tar.TypeLink, Name: "srv/app/conf.link", Linkname: "srv/app/conf"}, ""},
		{tar.Header{Typeflag: tar.TypeChar, Name: "srv/app/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, ""},
	}, func(c *v1.Config) { c.Volumes = map[string]struct{}{"/srv/app": {}} })
	return ref
}

// TestLodgeVolumeFill: a volume with nothing in it takes what the image
// has where it is mounted, as docker's does (an image's VOLUME and a named
// volume alike): owners, modes, hard links; no device node reaches the
// host, and the user is told; a filled volume keeps what containers wrote;
// nocopy leaves it empty. --mount's bind, volume (with a subpath,
// read-only) and tmpfs (sized) mounts; -v makes a missing host directory;
// --volumes-from.
func TestLodgeVolumeFill(t *testing.T) {
	l := newLodgeCLI(t)
	ref := volumeImage(t)
	l.must("pull", ref)
	t.Cleanup(func() { l.run("", "volume", "rm", "appdata", "bare") })

	r := l.run("", "run", "--rm", "--network", "none", ref, "sh", "-c", "stat -c '%u:%g %a' /srv/app; cat /srv/app/conf.link; ls /srv/app")
	if r.code != 0 || r.stdout != "1000:1000 750\nseed\nconf\nconf.link\n" {
		t.Errorf("the image's VOLUME: exit %d: %q, want its owner, mode and files but the device node\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "/srv/app/null is a device node, fifo or socket: not copied") {
		t.Errorf("no word of the device node left out:\n%s", r.stderr)
	}
	if vs := l.must("volume", "ls", "-q"); vs != "" {
		t.Errorf("--rm left its anonymous volume: %q", vs)
	}

	l.must("run", "--rm", "--network", "none", "-v", "appdata:/srv/app", ref, "sh", "-c", "echo mine > /srv/app/conf; mkdir /srv/app/sub; echo s > /srv/app/sub/f")
	data := filepath.Join(l.dir, "volumes", "appdata", "_data")
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || fi.Mode().Perm() != 0o750 {
		t.Errorf("the volume's root on the host: %d %v, want the image directory's 1000 0750", st.Uid, fi.Mode())
	}
	a, _ := os.Stat(filepath.Join(data, "conf"))
	b, _ := os.Stat(filepath.Join(data, "conf.link"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("the image's hard link became two files in the volume")
	}
	if out := l.must("run", "--rm", "--network", "none", "-v", "appdata:/srv/app", ref, "cat", "/srv/app/conf.link"); out != "mine\n" {
		t.Errorf("a filled volume was filled again: %q", out)
	}
	if out := l.must("run", "--rm", "--network", "none", "-v", "bare:/srv/app:nocopy", ref, "ls", "-A", "/srv/app"); out != "" {
		t.Errorf("nocopy: %q", out)
	}

	host := filepath.Join(t.TempDir(), "made", "here")
	out := l.must("run", "--rm", "--network", "none", "-v", host+":/h",
		"--mount", "type=volume,source=appdata,target=/sub,volume-subpath=sub,readonly",
		"--mount", "type=tmpfs,destination=/scratch,tmpfs-size=1m",
		"--mount", "type=bind,src="+filepath.Dir(host)+",dst=/parent,readonly",
		ref, "sh", "-c", "df -k /scratch | awk 'NR==2 {print $2}'; cat /sub/f; touch /sub/x 2>/dev/null || echo ro; echo h > /h/f; ls /parent; touch /parent/x 2>/dev/null || echo ro")
	if out != "1024\ns\nro\nhere\nro\n" {
		t.Errorf("--mount and -v: %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(host, "f")); err != nil || string(b) != "h\n" {
		t.Errorf("-v's missing host directory: %q, %v", b, err)
	}
	// --volumes-from: another container's volumes at their paths (here
	// read-only), as inspect's Mounts lists them; rm -v takes the
	// anonymous one with its container.
	l.must("run", "--name", "holder", "--network", "none", ref, "true")
	if got := l.must("inspect", "-f", "{{range .Mounts}}{{.Type}} {{.Destination}} {{.RW}}{{end}}", "holder"); got != "volume /srv/app true\n" {
		t.Errorf("holder's Mounts: %q", got)
	}
	if out := l.must("run", "--rm", "--network", "none", "--volumes-from", "holder:ro", ref, "sh", "-c", "cat /srv/app/conf; touch /srv/app/x 2>/dev/null || echo ro"); out != "seed\nro\n" {
		t.Errorf("--volumes-from holder:ro: %q", out)
	}
	l.must("rm", "-v", "holder")
	if vs := strings.Fields(l.must("volume", "ls", "-q")); len(vs) != 2 {
		t.Errorf("volumes after rm -v of holder: %q, want appdata and bare", vs)
	}
	if r := l.run("", "run", "--rm", "--network", "none", "--mount", "type=bind,src=/no/such/dir,dst=/d", ref, "true"); r.code == 0 || !strings.Contains(r.stderr, "/no/such/dir") {
		t.Errorf("--mount of a missing host path: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat("/no/such/dir"); err == nil {
		t.Error("--mount made its missing source")
	}
}
