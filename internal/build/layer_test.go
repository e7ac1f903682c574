package build

import (
	"path/filepath"
	"testing"

	"github.com/lodgeruntime/lodge/internal/imagefs"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/layers/layerstest"
)

// USER and --chown names are the image's: a user's group is its primary
// one, a number the image does not list stands for itself.
func TestRunUser(t *testing.T) {
	s := &layers.Store{Dir: filepath.Join(t.TempDir(), "layers")}
	p := layerstest.Files(t, s, map[string]string{"etc/passwd": "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n", "etc/group": "root:x:0:\nstaff:x:50:\n"})
	u, err := imagefs.Open([]string{p})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for in, want := range map[string]string{"nobody": "65534:65533", "nobody:staff": "65534:50", "1000": "1000:0", "0:50": "0:50", "65534": "65534:65533"} {
		if got, err := runUser(u, in); err != nil || got != want {
			t.Errorf("runUser(%s) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"ghost", "nobody:nogroup", "-1"} {
		if _, err := runUser(u, bad); err == nil {
			t.Errorf("runUser(%s) accepted", bad)
		}
	}
	if o, err := lookupOwner(u, "nobody:staff"); err != nil || *o != [2]int{65534, 50} {
		t.Errorf("lookupOwner = %v, %v", o, err)
	}
}
