package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lodgeruntime/lodge/internal/build"
)

// --secret as docker buildx reads it: a file, a variable, or the variable
// of the id's name; what cannot be read is refused before the build.
func TestSecretMap(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(f, []byte("x"), 0o600)
	t.Setenv("LODGE_TEST_TOKEN", "y")
	got, err := secretMap([]string{"id=a,src=" + f, "id=b,env=LODGE_TEST_TOKEN", "id=LODGE_TEST_TOKEN", "type=file,id=c,source=" + f})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]build.Secret{"a": {File: f}, "b": {Env: "LODGE_TEST_TOKEN"}, "LODGE_TEST_TOKEN": {Env: "LODGE_TEST_TOKEN"}, "c": {File: f}}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %+v, want %+v", k, got[k], v)
		}
	}
	for v, msg := range map[string]string{
		"src=" + f:                      "no id=",
		"id=a,src=/nonexistent/tok":     "no such file",
		"id=a,env=LODGE_TEST_UNSET_VAR": "not set",
		"id=LODGE_TEST_UNSET_VAR":       "not set",
		"id=a,src=" + f + ",env=X":      "not both",
		"id=a,type=ssh":                 "want file or env",
		"id=a,path=x":                   "unknown key",
	} {
		if _, err := secretMap([]string{v}); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("--secret %s: %v, want %q", v, err, msg)
		}
	}
}
