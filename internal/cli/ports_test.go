package cli

import (
	"net"
	"testing"
)

func TestParsePort(t *testing.T) {
	for in, want := range map[string]portMap{
		"8080:80":             {HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		"127.0.0.1:8080:80":   {HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		"53:53/udp":           {HostPort: 53, ContainerPort: 53, Protocol: "udp"},
		"80":                  {ContainerPort: 80, Protocol: "tcp"}, // a host port of the kernel's choosing
		":80":                 {ContainerPort: 80, Protocol: "tcp"},
		"127.0.0.1::80/udp":   {HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "udp"},
		"0.0.0.0:1:65535/tcp": {HostIP: "0.0.0.0", HostPort: 1, ContainerPort: 65535, Protocol: "tcp"},
	} {
		if got, err := parsePort(in); err != nil || got != want {
			t.Errorf("-p %s = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "8080:", "a:80", "8080:80/sctp", "1.2.3:8080:80", "1:2:3:4", "0:80", "80:70000", "127.0.0.1::"} {
		if p, err := parsePort(bad); err == nil {
			t.Errorf("-p %q accepted as %+v", bad, p)
		}
	}
}

func TestPublishAll(t *testing.T) {
	given := []portMap{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}
	got, err := publishAll(given, []string{"443/tcp", "80/tcp", "53/udp", "53", "443"})
	if err != nil {
		t.Fatal(err)
	}
	// 80/tcp is published by -p already; each other port once, in order,
	// with no host port yet.
	want := []portMap{given[0], {ContainerPort: 53, Protocol: "tcp"}, {ContainerPort: 53, Protocol: "udp"}, {ContainerPort: 443, Protocol: "tcp"}}
	if len(got) != len(want) {
		t.Fatalf("publishAll = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("publishAll[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"http", "80/sctp", "0", "80/"} {
		if _, err := publishAll(nil, []string{bad}); err == nil {
			t.Errorf("exposed port %q accepted", bad)
		}
	}
}

func TestAssignHostPorts(t *testing.T) {
	// A port a running container of lodge publishes on every address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := l.Addr().(*net.TCPAddr).Port
	l.Close()
	others := []published{{portMap{HostPort: taken, ContainerPort: 80, Protocol: "tcp"}, "web"}}
	in := []portMap{
		{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 8080, Protocol: "tcp"},
		{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "tcp"},
		{HostIP: "127.0.0.1", ContainerPort: 81, Protocol: "tcp"},
		{HostIP: "127.0.0.1", ContainerPort: 53, Protocol: "udp"},
	}
	got, err := assignHostPorts(in, others)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != in[0] {
		t.Errorf("a given host port changed: %+v", got[0])
	}
	if in[1].HostPort != 0 {
		t.Errorf("assignHostPorts changed its argument: %+v", in[1])
	}
	seen := map[portMap]bool{}
	for _, p := range got[1:] {
		if p.HostPort == 0 || p.HostPort == taken {
			t.Errorf("%d/%s got host port %d (taken: %d)", p.ContainerPort, p.Protocol, p.HostPort, taken)
		}
		k := portMap{HostPort: p.HostPort, Protocol: p.Protocol}
		if seen[k] {
			t.Errorf("host port %d/%s assigned twice", p.HostPort, p.Protocol)
		}
		seen[k] = true
		if err := portFree(p); err != nil {
			t.Errorf("an assigned port is not free: %v", err)
		}
	}
	if err := portsTaken(got[:1], []published{{got[0], "web"}}); err == nil {
		t.Error("a host port another container publishes was not refused")
	}

	// A port the kernel offers that another container publishes, or that
	// this one took already, is passed over.
	offers := []int{taken, 40000, 40000, taken, 40001}
	defer func(f func(portMap) (int, error)) { pickPort = f }(pickPort)
	pickPort = func(portMap) (int, error) { p := offers[0]; offers = offers[1:]; return p, nil }
	got, err = assignHostPorts([]portMap{{ContainerPort: 80, Protocol: "tcp"}, {ContainerPort: 81, Protocol: "tcp"}}, others)
	if err != nil || got[0].HostPort != 40000 || got[1].HostPort != 40001 {
		t.Errorf("with the kernel offering %d, 40000, 40000, %d, 40001: %+v, %v; want 40000 and 40001", taken, taken, got, err)
	}
	// The same port over another protocol is another port.
	offers = []int{taken}
	if got, err = assignHostPorts([]portMap{{ContainerPort: 53, Protocol: "udp"}}, others); err != nil || got[0].HostPort != taken {
		t.Errorf("udp: %+v, %v; want %d (taken over tcp only)", got, err, taken)
	}
}
