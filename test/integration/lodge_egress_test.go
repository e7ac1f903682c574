package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// gwScript sets $gw to the container's default gateway: the host's
// address on its network, which answers ping (INPUT, not FORWARD).
const gwScript = `set -- $(ip -4 route show default); gw=$3; `

// TestLodgeEgress: --deny-out and --allow-out hold towards beyond the
// host, the host itself and a peer on the same bridge, for new
// connections only, again after a restart, and leave nothing once the
// container is gone; a network made with enable_icc=false keeps its
// containers apart while they and the host still reach each other and
// beyond.
func TestLodgeEgress(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	hostAddr, outAddr, url := beyondHost(t)
	leftover := func(what string) {
		t.Helper()
		if out, _ := exec.Command("iptables-save", "-t", "filter").Output(); strings.Contains(string(out), "LODGE-EG-") {
			t.Errorf("%s: egress rules left:\n%s", what, out)
		}
	}

	// All denied but one destination: it is reached, the host is not.
	if out := l.run("", "run", "--rm", "--deny-out", "0.0.0.0/0", "--allow-out", outAddr, ref, "sh", "-c",
		gwScript+"wget -qO- "+url+"; ping -c 1 -W 3 $gw >/dev/null || echo denied"); out.stdout != hostAddr+"\ndenied\n" {
		t.Errorf("--deny-out 0.0.0.0/0 --allow-out %s: exit %d, %q %s", outAddr, out.code, out.stdout, out.stderr)
	}
	leftover("after a --rm container")

	// One destination and a peer on the same bridge denied: the rest is
	// reached, and the peer still reaches the container (replies pass).
	l.must("run", "-d", "--name", "egpeer", ref, "sh", "-c", "mkdir /www; echo peer > /www/index.html; exec httpd -f -p 80 -h /www")
	defer l.run("", "rm", "-f", "egpeer")
	peer := strings.TrimSpace(l.must("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "egpeer"))
	if got := httpGet("http://" + peer + "/"); got != "peer\n" { // up: unreached below means denied
		t.Fatalf("the peer's server from the host: %q", got)
	}
	l.must("run", "-d", "--name", "egd", "--deny-out", outAddr, "--deny-out", peer, ref, "sh", "-c",
		"mkdir /www; echo denied-one > /www/index.html; exec httpd -f -p 80 -h /www")
	defer l.run("", "rm", "-f", "egd")
	check := gwScript + "wget -qO- " + url + " || echo denied; wget -qO- http://" + peer + "/ || echo denied; ping -c 1 -W 3 $gw >/dev/null && echo host"
	if out := l.run("", "exec", "egd", "sh", "-c", check); out.stdout != "denied\ndenied\nhost\n" {
		t.Errorf("--deny-out %s --deny-out %s (a peer): exit %d, %q %s", outAddr, peer, out.code, out.stdout, out.stderr)
	}
	egd := strings.TrimSpace(l.must("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "egd"))
	if out := l.run("", "exec", "egpeer", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://"+egd+"/ && exit; sleep 1; done"); out.stdout != "denied-one\n" {
		t.Errorf("a peer -> the container that denies it: exit %d, %q %s; want the reply to pass", out.code, out.stdout, out.stderr)
	}
	l.must("restart", "egd")
	if out := l.run("", "exec", "egd", "sh", "-c", check); out.stdout != "denied\ndenied\nhost\n" {
		t.Errorf("after a restart: exit %d, %q %s", out.code, out.stdout, out.stderr)
	}
	if got := l.must("inspect", "-f", "{{json .HostConfig.Egress}}", "egd"); got != `{"deny":["`+outAddr+`/32","`+peer+`/32"]}`+"\n" {
		t.Errorf("inspect's HostConfig.Egress: %s", got)
	}
	id := strings.TrimSpace(l.must("inspect", "-f", "{{.Id}}", "egd"))
	if out, _ := exec.Command("iptables-save", "-t", "filter").Output(); strings.Count(string(out), "lodge-container-"+id[:12]) != 2 {
		t.Errorf("after a restart: want two jumps to its rules (FORWARD, INPUT):\n%s", out)
	}
	// Changed while it runs: cleared, then a new list.
	l.must("update", "--deny-out", "", "egd")
	if out := l.run("", "exec", "egd", "sh", "-c", check); out.stdout != hostAddr+"\npeer\nhost\n" {
		t.Errorf("after update --deny-out '': exit %d, %q %s", out.code, out.stdout, out.stderr)
	}
	leftover("after update --deny-out ''")
	l.must("update", "--deny-out", peer, "egd")
	if out := l.run("", "exec", "egd", "sh", "-c", check); out.stdout != hostAddr+"\ndenied\nhost\n" {
		t.Errorf("after update --deny-out %s: exit %d, %q %s", peer, out.code, out.stdout, out.stderr)
	}
	l.must("rm", "-f", "egd", "egpeer")
	leftover("after rm -f")
	if out := l.run("", "run", "--rm", "--network", "none", "--deny-out", "0.0.0.0/0", ref, "true"); out.code != 125 || !strings.Contains(out.stderr, "no network") {
		t.Errorf("--deny-out without a network: exit %d: %s", out.code, out.stderr)
	}
	if out := l.run("", "run", "--rm", "--deny-out", "example.com", ref, "true"); out.code != 125 || !strings.Contains(out.stderr, "IPv4 address or CIDR") {
		t.Errorf("--deny-out of a name: exit %d: %s", out.code, out.stderr)
	}

	// Containers apart.
	l.run("", "network", "rm", "lodgeicctest")
	l.must("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "lodgeicctest")
	defer l.run("", "network", "rm", "lodgeicctest")
	if got := l.must("network", "inspect", "-f", `{{index .Options "com.docker.network.bridge.enable_icc"}}`, "lodgeicctest"); got != "false\n" {
		t.Errorf("inspect: enable_icc %q", got)
	}
	l.must("run", "-d", "--name", "apart", "--network", "lodgeicctest", ref, "sh", "-c", "mkdir /www; echo apart > /www/index.html; exec httpd -f -p 80 -h /www")
	defer l.run("", "rm", "-f", "apart")
	apart := strings.TrimSpace(l.must("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "apart"))
	if got := httpGet("http://" + apart + "/"); got != "apart\n" { // up, and the host reaches it
		t.Fatalf("enable_icc=false: the host does not reach a member's server: %q", got)
	}
	if out := l.run("", "run", "--rm", "--network", "lodgeicctest", ref, "sh", "-c",
		"timeout 5 wget -qO- http://"+apart+"/ || echo unreached; wget -qO- "+url); out.stdout != "unreached\n"+hostAddr+"\n" {
		t.Errorf("enable_icc=false: exit %d, %q %s; want the other container unreached and beyond the host reached", out.code, out.stdout, out.stderr)
	}
	if out := l.run("", "exec", "apart", "sh", "-c", gwScript+"ping -c 1 -W 3 $gw >/dev/null && echo host"); out.stdout != "host\n" {
		t.Errorf("enable_icc=false: the host unreached: exit %d, %q %s", out.code, out.stdout, out.stderr)
	}
	if out := l.run("", "network", "create", "-o", "com.docker.network.bridge.name=x", "lodgeicctest2"); out.code == 0 || !strings.Contains(out.stderr, "enable_icc") {
		t.Errorf("an option lodge does not have: exit %d: %s", out.code, out.stderr)
	}
}
