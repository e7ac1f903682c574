package cli

import (
	"strings"
	"testing"
	"time"
)

func TestMemberHosts(t *testing.T) {
	rec := func(id, name, ip string, aliases ...string) *ctrRecord {
		r := &ctrRecord{ID: strings.Repeat(id, 64), Name: name, Created: time.Now(), Network: &ctrNetwork{Name: "app", IP: ip}}
		if aliases != nil {
			r.NetFiles = &netFilesConf{Aliases: aliases, ExtraHosts: []string{"gw:10.0.0.1"}}
		}
		return r
	}
	db := member{rec: rec("a", "db", "10.88.0.2", "database", "db"), hostname: "aaaaaaaaaaaa", ip: "10.88.0.2"}
	web := member{rec: rec("b", "web", "10.88.0.3"), hostname: "front", ip: "10.88.0.3"}
	members := map[string][]member{"app": {db, web}}
	of := func(n string) []member { return members[n] }

	got := memberHosts(web, of)
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.3\tfront\n" +
		"# other containers on network app\n10.88.0.2\tdb database aaaaaaaaaaaa\n"
	if got != want {
		t.Errorf("web's hosts:\n%s\nwant:\n%s", got, want)
	}
	got = memberHosts(db, of)
	if !strings.Contains(got, "10.0.0.1\tgw\n") || !strings.HasSuffix(got, "10.88.0.3\tweb bbbbbbbbbbbb front\n") {
		t.Errorf("db's hosts lack its --add-host or the other member:\n%s", got)
	}
	if got := memberHosts(web, func(string) []member { return []member{web} }); strings.Contains(got, peersMark) {
		t.Errorf("alone on the network, its hosts list others:\n%s", got)
	}

	// On two networks (app first, back as eth1): a section each, with
	// each peer's address on that network; the default network has none.
	api := member{rec: rec("c", "api", "10.88.0.4"), hostname: "cccccccccccc", ip: "10.88.0.4"}
	api.rec.Network.Extra = []netLink{{Name: "back", IfName: "eth1", IP: "10.89.0.2"}, {Name: bridgeNetwork, IfName: "eth2", IP: "10.87.0.9"}}
	store := member{rec: rec("d", "store", "10.89.0.3"), hostname: "dddddddddddd", ip: "10.89.0.3"}
	store.rec.Network.Name = "back"
	apiOnBack := api
	apiOnBack.ip = "10.89.0.2"
	members = map[string][]member{"app": {db, api}, "back": {apiOnBack, store}, bridgeNetwork: {api}}
	got = memberHosts(api, of)
	want = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.4\tcccccccccccc\n" +
		"# other containers on network app\n10.88.0.2\tdb database aaaaaaaaaaaa\n" +
		"# other containers on network back\n10.89.0.3\tstore dddddddddddd\n"
	if got != want {
		t.Errorf("api's hosts on two networks:\n%s\nwant:\n%s", got, want)
	}
	if got := memberHosts(store, of); !strings.HasSuffix(got, "# other containers on network back\n10.89.0.2\tapi cccccccccccc\n") {
		t.Errorf("store's hosts name api by its address on back:\n%s", got)
	}
}

func TestValidHostname(t *testing.T) {
	for _, s := range []string{"db", "my_db", "a.b-c", "x1"} {
		if !validHostname(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "-a", "a..b", "a b", "a\tb", "a\n10.0.0.1 evil", strings.Repeat("a", 64)} {
		if validHostname(s) {
			t.Errorf("%q taken", s)
		}
	}
}
