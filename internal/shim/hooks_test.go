package shim

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRunHooks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	sh := func(script string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", script}}
	}
	st := specs.State{ID: "c1", Status: "created", Bundle: "/b"}
	hooks := []specs.Hook{sh("cat > " + out), sh("exit 3"), sh("echo second >> " + out)}

	if err := RunHooks(context.Background(), "createRuntime", hooks, st); err == nil {
		t.Fatal("a failing createRuntime hook was not reported")
	}
	var got specs.State
	b, _ := os.ReadFile(out)
	if err := json.Unmarshal(b, &got); err != nil || got.ID != "c1" {
		t.Fatalf("hook stdin %q: %v", b, err)
	}

	os.Remove(out)
	if err := RunHooks(context.Background(), "poststop", hooks, st); err == nil {
		t.Fatal("the failing poststop hook was not reported")
	}
	if b, _ := os.ReadFile(out); len(b) == 0 || string(b[len(b)-7:]) != "second\n" {
		t.Fatalf("poststop hooks after a failure did not run: %q", b)
	}
	zero := 0
	if err := RunHooks(context.Background(), "prestart", []specs.Hook{{Path: "/bin/true", Timeout: &zero}}, st); err == nil {
		t.Fatal("a zero timeout was accepted")
	}
}
