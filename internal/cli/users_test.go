package cli

import (
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/layers/layerstest"
)

// -u as docker reads it: a name's ids; a listed number's primary group;
// an unlisted number alone; the groups that list the user, unless a
// group is given; what the top layer removed is not read.
func TestResolveUser(t *testing.T) {
	s := &layers.Store{Dir: filepath.Join(t.TempDir(), "layers")}
	lower := layerstest.Files(t, s, map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nsvc:x:1001:50::/:/bin/false\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nstaff:x:50:\nssl:x:101:svc,app\nextra:x:102:app\n",
	})
	lays := []string{lower}
	for in, want := range map[string]specs.User{
		"app":       {UID: 1000, GID: 1000, AdditionalGids: []uint32{101, 102}},
		"1000":      {UID: 1000, GID: 1000, AdditionalGids: []uint32{101, 102}},
		"svc":       {UID: 1001, GID: 50, AdditionalGids: []uint32{101}},
		"4242":      {UID: 4242},
		"app:staff": {UID: 1000, GID: 50},
		"app:7":     {UID: 1000, GID: 7},
		"0:0":       {},
	} {
		got, err := resolveUser(in, lays)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("resolveUser(%s) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"ghost", "app:ghost", "ghost:0"} {
		if _, err := resolveUser(bad, lays); err == nil {
			t.Errorf("resolveUser(%s) accepted", bad)
		}
	}
	upper := layerstest.Files(t, s, map[string]string{"etc/.wh.group": ""})
	if got, err := resolveUser("app", []string{upper, lower}); err != nil || got.AdditionalGids != nil {
		t.Errorf("groups of a removed /etc/group: %+v, %v", got, err)
	}
	if _, err := resolveUser("app:staff", []string{upper, lower}); err == nil {
		t.Error("a group of a removed /etc/group accepted")
	}
}
