package cli

// Published ports (-p, -P, --expose): parsing them as docker does, checking
// them against the host and other containers of lodge, and the host ports
// the kernel picks.

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// portMap is one -p publication.
type portMap struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

func (p portMap) String() string {
	ip := p.HostIP
	if ip == "" {
		ip = "0.0.0.0"
	}
	return fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Protocol)
}

// parsePort reads -p [[IP:][HOSTPORT]:]CONTAINERPORT[/PROTO], as docker
// does: without a host port (`-p 80`, `-p 127.0.0.1::80`) the host port is
// 0, one that assignHostPorts picks.
func parsePort(s string) (portMap, error) {
	spec, proto, ok := strings.Cut(s, "/")
	p, err := exposedPort(proto, ok)
	if err != nil {
		return p, fmt.Errorf("-p %q: %w", s, err)
	}
	parts := strings.Split(spec, ":")
	if len(parts) == 3 {
		if net.ParseIP(parts[0]) == nil {
			return p, fmt.Errorf("-p %q: %q is not an IP address", s, parts[0])
		}
		p.HostIP, parts = parts[0], parts[1:]
	}
	if len(parts) > 2 {
		return p, fmt.Errorf("-p %q: want [[IP:][HOSTPORT]:]CONTAINERPORT[/tcp|udp]", s)
	}
	if len(parts) == 2 {
		if parts[0] != "" {
			if p.HostPort, err = portNumber(parts[0]); err != nil {
				return p, fmt.Errorf("-p %q: %w", s, err)
			}
		}
		parts = parts[1:]
	}
	if p.ContainerPort, err = portNumber(parts[0]); err != nil {
		return p, fmt.Errorf("-p %q: %w", s, err)
	}
	return p, nil
}

// exposedPort is a publication of no port yet over proto (tcp when
// given is false).
func exposedPort(proto string, given bool) (portMap, error) {
	switch {
	case !given:
		proto = "tcp"
	case proto != "tcp" && proto != "udp":
		return portMap{}, fmt.Errorf("protocol %q: want tcp or udp", proto)
	}
	return portMap{Protocol: proto}, nil
}

// parseExposed reads an image's exposed port or --expose's
// PORT[/PROTO].
func parseExposed(s string) (portMap, error) {
	port, proto, ok := strings.Cut(s, "/")
	p, err := exposedPort(proto, ok)
	if err == nil {
		p.ContainerPort, err = portNumber(port)
	}
	if err != nil {
		return p, fmt.Errorf("exposed port %q: %w", s, err)
	}
	return p, nil
}

// publishAll adds to ports, for -P, each of exposed (the image's and
// --expose's ports, as PORT[/PROTO]) that ports do not publish yet, to a
// host port assignHostPorts picks, in port order.
func publishAll(ports []portMap, exposed []string) ([]portMap, error) {
	var add []portMap
	for _, e := range exposed {
		p, err := parseExposed(e)
		if err != nil {
			return nil, err
		}
		dup := false
		for _, q := range append(ports, add...) {
			dup = dup || (q.ContainerPort == p.ContainerPort && q.Protocol == p.Protocol)
		}
		if !dup {
			add = append(add, p)
		}
	}
	sort.Slice(add, func(i, j int) bool {
		if add[i].ContainerPort != add[j].ContainerPort {
			return add[i].ContainerPort < add[j].ContainerPort
		}
		return add[i].Protocol < add[j].Protocol
	})
	return append(ports, add...), nil
}

func portNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want 1-65535", s)
	}
	return n, nil
}

// published is a host port that a running container of lodge publishes.
type published struct {
	portMap
	by string // the container's name
}

// publishedPorts lists the host ports running containers of lodge publish.
func publishedPorts() ([]published, error) {
	all, err := allCtrs()
	if err != nil {
		return nil, err
	}
	var out []published
	for _, r := range all {
		if r.Network == nil {
			continue
		}
		if _, running := r.status(); !running {
			continue
		}
		for _, p := range r.Network.Ports {
			out = append(out, published{p, r.Name})
		}
	}
	return out, nil
}

// clash says whether p and q publish the same host port (DNAT would send
// its traffic to one of them at random).
func (p portMap) clash(q portMap) bool {
	anyIP := func(ip string) bool { return ip == "" || ip == "0.0.0.0" }
	return p.HostPort == q.HostPort && p.Protocol == q.Protocol && (p.HostIP == q.HostIP || anyIP(p.HostIP) || anyIP(q.HostIP))
}

// portsTaken refuses a host port another running container of lodge
// publishes.
func portsTaken(ports []portMap, others []published) error {
	for _, theirs := range others {
		for _, p := range ports {
			if p.HostPort != 0 && p.clash(theirs.portMap) {
				return fmt.Errorf("-p %s: host port %d/%s is already published by container %s", p, p.HostPort, p.Protocol, theirs.by)
			}
		}
	}
	return nil
}

// assignHostPorts gives each of ports without a host port (-P, -p
// CONTAINERPORT) a free one from the kernel's ephemeral range, as docker
// does: one the kernel hands out to a listener on the publication's
// address and protocol, that no running container of lodge publishes and
// no other publication of this container takes. The caller holds the
// ports lock, so no container of lodge takes it meanwhile.
func assignHostPorts(ports []portMap, others []published) ([]portMap, error) {
	out := append([]portMap(nil), ports...)
	for i := range out {
		if out[i].HostPort != 0 {
			continue
		}
		p := out[i]
		for try := 0; ; try++ {
			if try == 100 {
				return nil, fmt.Errorf("-P %d/%s: found no free host port", p.ContainerPort, p.Protocol)
			}
			port, err := pickPort(p)
			if err != nil {
				return nil, fmt.Errorf("-P %d/%s: pick a host port: %w", p.ContainerPort, p.Protocol, err)
			}
			p.HostPort = port
			ok := portsTaken([]portMap{p}, others) == nil
			for j := range out {
				ok = ok && (j == i || !p.clash(out[j]))
			}
			if ok {
				break
			}
		}
		out[i] = p
	}
	return out, nil
}

// pickPort is kernelPort; tests replace it.
var pickPort = kernelPort

// kernelPort is a port the kernel gives a listener on p's address and
// protocol (closed again at once: portFree checks it after).
func kernelPort(p portMap) (int, error) {
	addr := net.JoinHostPort(p.HostIP, "0")
	if p.Protocol == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFree refuses a host port something already listens on (the
// bridge's DNAT would hide it, or it would hide the container).
func portFree(p portMap) error {
	addr := net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
	if p.Protocol == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("-p %s: host port %d/udp is in use: %w", p, p.HostPort, err)
		}
		return c.Close()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-p %s: host port %d/tcp is in use: %w", p, p.HostPort, err)
	}
	return l.Close()
}
