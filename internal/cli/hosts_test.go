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
	db := member{rec: rec("a", "db", "10.88.0.2", "database", "db"), hostname: "aaaaaaaaaaaa"}
	web := member{rec: rec("b", "web", "10.88.0.3"), hostname: "front"}
	members := []member{db, web}

	got := memberHosts("app", web, members)
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.3\tfront\n" +
		"# other containers on network app\n10.88.0.2\tdb database aaaaaaaaaaaa\n"
	if got != want {
		t.Errorf("web's hosts:\n%s\nwant:\n%s", got, want)
	}
	got = memberHosts("app", db, members)
	if !strings.Contains(got, "10.0.0.1\tgw\n") || !strings.HasSuffix(got, "10.88.0.3\tweb bbbbbbbbbbbb front\n") {
		t.Errorf("db's hosts lack its --add-host or the other member:\n%s", got)
	}
	if got := memberHosts("app", web, []member{web}); strings.Contains(got, peersMark) {
		t.Errorf("alone on the network, its hosts list others:\n%s", got)
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
