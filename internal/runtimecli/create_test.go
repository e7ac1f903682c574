package runtimecli

import "testing"

func TestSupervises(t *testing.T) {
	t.Parallel()
	g := globals{root: "/run/lodge/lodge", logFormat: "text", debug: true}
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{append(g.args("/d"), "__supervise", "--bundle", "b", "id"), true},
		{append(g.args("/d"), "__exec-hold", "--process", "p.json", "id"), true},
		{append(globals{root: "/r", logFormat: "json", logFile: "/l"}.args("/d"), "__supervise"), true},
		{[]string{"run", "busybox", "echo", "__supervise"}, false},
		{[]string{"exec", "c", "__exec-hold"}, false},
		{[]string{"--root", "__supervise"}, false}, // a flag's value
		{nil, false},
	} {
		if got := Supervises(tc.args); got != tc.want {
			t.Errorf("Supervises(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
