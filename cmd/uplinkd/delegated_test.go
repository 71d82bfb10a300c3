package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/delegstate"
	"github.com/uplinkd/uplinkd/policy"
)

// TestEventDelegated: `uplinkd event --iface IF --delegated PREFIX|none`
// with lifetimes reaches the daemon as one event; what cannot be a
// delegation is a usage error before the socket is asked.
func TestEventDelegated(t *testing.T) {
	h := &ctlHandler{events: make(chan control.Event, 16)}
	sock := serveControl(t, h)
	u32 := func(v uint32) *uint32 { return &v }
	for _, tc := range []struct {
		name string
		args []string
		want *control.Event // nil: a usage error
		err  string
	}{
		{"prefix with lifetimes", []string{"--iface", "ppp0", "--delegated", "2001:db8:a::/56", "--preferred-lifetime", "1800", "--valid-lifetime", "3600"},
			&control.Event{Iface: "ppp0", Delegated: "2001:db8:a::/56", PreferredLifetime: u32(1800), ValidLifetime: u32(3600)}, ""},
		{"prefix alone", []string{"--iface", "ppp0", "--delegated", "2001:db8:a::/64"},
			&control.Event{Iface: "ppp0", Delegated: "2001:db8:a::/64"}, ""},
		{"infinite", []string{"--iface", "ppp0", "--delegated", "2001:db8:a::/56", "--valid-lifetime", "4294967295"},
			&control.Event{Iface: "ppp0", Delegated: "2001:db8:a::/56", ValidLifetime: u32(0xffffffff)}, ""},
		{"none", []string{"--iface", "ppp0", "--delegated", "none"}, &control.Event{Iface: "ppp0", Delegated: "none"}, ""},
		{"no interface", []string{"--delegated", "2001:db8:a::/56"}, nil, "an event needs an interface"},
		{"with a state", []string{"--iface", "ppp0", "--state", "up", "--delegated", "2001:db8:a::/56"}, nil, "carries the interface and the prefix alone"},
		{"longer than /64", []string{"--iface", "ppp0", "--delegated", "2001:db8:a::/80"}, nil, "want a /64 or shorter"},
		{"host bits", []string{"--iface", "ppp0", "--delegated", "2001:db8:a::1/56"}, nil, "has host bits set"},
		{"IPv4", []string{"--iface", "ppp0", "--delegated", "10.0.0.0/8"}, nil, "not an IPv6 prefix"},
		{"garbage", []string{"--iface", "ppp0", "--delegated", "soon"}, nil, `delegated "soon": want an IPv6 prefix`},
		{"lifetime not a number", []string{"--iface", "ppp0", "--delegated", "2001:db8:a::/56", "--valid-lifetime", "1h"}, nil, `--valid-lifetime "1h": want seconds`},
		{"preferred above valid", []string{"--iface", "ppp0", "--delegated", "2001:db8:a::/56", "--preferred-lifetime", "20", "--valid-lifetime", "10"}, nil, "longer than the valid lifetime"},
		{"lifetimes with none", []string{"--iface", "ppp0", "--delegated", "none", "--valid-lifetime", "10"}, nil, "no lifetimes"},
		{"lifetimes without a prefix", []string{"--iface", "ppp0", "--state", "up", "--valid-lifetime", "10"}, nil, "with a delegated prefix only"},
		{"bad --local with a prefix", []string{"--iface", "ppp0", "--local", "x", "--delegated", "2001:db8:a::/56"}, nil, "--local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"event", "--socket", sock}, tc.args...), &out, &errb)
			if tc.want == nil {
				if code != exitUsage || !strings.Contains(errb.String(), tc.err) {
					t.Fatalf("exit %d, stderr %q; want a usage error with %q", code, errb.String(), tc.err)
				}
				return
			}
			if code != exitOK || errb.Len() > 0 {
				t.Fatalf("exit %d, stderr %q", code, errb.String())
			}
			got := <-h.events
			if got.Iface != tc.want.Iface || got.Delegated != tc.want.Delegated ||
				!eqU32(got.PreferredLifetime, tc.want.PreferredLifetime) || !eqU32(got.ValidLifetime, tc.want.ValidLifetime) {
				t.Errorf("event %+v, want %+v", got, *tc.want)
			}
		})
	}
}

func eqU32(a, b *uint32) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

// TestPlanDelegated: plan reads the learned delegations (read only),
// drops the expired ones and names each IPv6 uplink's delegation.
func TestPlanDelegated(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	set := delegstate.Set{}
	hour, minute := uint32(3600), uint32(60)
	set.Learn("ppp0", netip.MustParsePrefix("2001:db8:a::/56"), delegstate.Lifetimes{Valid: &hour}, now)
	set.Learn("ppp1", netip.MustParsePrefix("2001:db8:b::/56"), delegstate.Lifetimes{Valid: &minute}, now.Add(-time.Hour))
	if err := delegstate.Save(delegstate.Path(dir), set); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.Parse("t.toml", []byte(fmt.Sprintf(`[daemon]
state_dir = %q
[lan.ipv6]
mode = "prefix"
[[uplink]]
name = "dsl"
interface = "ppp0"
ipv6 = true
[[uplink]]
name = "lte"
interface = "ppp1"
ipv6 = true
[[uplink]]
name = "fixed"
interface = "eth1"
ipv6 = true
delegated_prefix = "2001:db8:c::/48"
`, dir)), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	got := planDelegated(cfg, now, &out, &errb)
	if len(got) != 1 || got["ppp0"][0].String() != "2001:db8:a::/56" {
		t.Errorf("learned = %v, want ppp0's alone (ppp1's expired)", got)
	}
	want := "# uplink dsl delegated 2001:db8:a::/56 (learned)\n# uplink fixed delegated 2001:db8:c::/48 (config)\n"
	if out.String() != want || errb.Len() > 0 {
		t.Errorf("stdout %q, stderr %q; want %q", out.String(), errb.String(), want)
	}
	if _, err := os.Stat(delegstate.Path(dir)); err != nil {
		t.Errorf("plan changed the state file: %v", err)
	}
}
