package policy

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
)

// TestKeysMatchFormat: the hand-appended keys must stay the text the fmt
// formats describe, since lastApplied and the repair check compare keys
// taken at different times.
func TestKeysMatchFormat(t *testing.T) {
	rules := []Rule{
		{},
		{Priority: 1000, Table: 200, Src: netip.MustParsePrefix("192.0.2.7/32")},
		{Priority: 32765, Table: MainTable, SuppressDefault: true},
		{Priority: 1, Table: 1001, Mark: 0x10000, Mask: 0xff0000, Extra: "iif lan0"},
		{Priority: 7, Table: 7, Mark: 0x2},
		{Priority: -1, Table: math.MaxInt32, Src: netip.MustParsePrefix("10.0.0.0/8")},
	}
	for _, r := range rules {
		want := fmt.Sprintf("%d/%d/%s/%x/%x/%t/%s", r.Priority, r.Table, r.Src, r.Mark, r.effectiveMask(), r.SuppressDefault, r.Extra)
		if got := r.Key(); got != want {
			t.Errorf("Rule%+v.Key() = %q, want %q", r, got, want)
		}
	}
	routes := []Route{
		{},
		{Table: MainTable, Dst: netip.MustParsePrefix("0.0.0.0/0")},
		{Table: 1001, Dst: netip.MustParsePrefix("198.51.100.0/24"), Metric: 100},
		{Table: 255, Dst: netip.MustParsePrefix("192.0.2.1/32"), Metric: -3},
	}
	for _, r := range routes {
		want := fmt.Sprintf("%d/%s/%d", r.Table, r.Dst, r.Metric)
		if got := r.Key(); got != want {
			t.Errorf("Route%+v.Key() = %q, want %q", r, got, want)
		}
	}
}

// TestIDsMatchKeys: two rules (routes) have the same ID exactly when they
// have the same Key, so Diff and the loop, which compare IDs, see the same
// objects as the keys name.
func TestIDsMatchKeys(t *testing.T) {
	src := netip.MustParsePrefix("192.0.2.7/32")
	rules := []Rule{
		{},
		{Priority: 1000, Table: 200, Src: src},
		{Priority: 1000, Table: 200, Src: src, IPv6: true},
		{Priority: 1000, Table: 200, Src: netip.MustParsePrefix("::ffff:192.0.2.7/128")},
		{Priority: 32765, Table: MainTable, SuppressDefault: true},
		{Priority: 1, Table: 1001, Mark: 0x10000, Mask: 0xff0000, Extra: "iif lan0"},
		{Priority: 1, Table: 1001, Mark: 0x10000, Mask: 0xff0000},
		{Priority: 7, Table: 7, Mark: 0x2},
		{Priority: 7, Table: 7, Mark: 0x2, Mask: 0xffffffff}, // the same: the kernel's mask
		{Priority: 7, Table: 7, Mark: 0x2, Protocol: 157},    // the same: protocol is not identity
	}
	for _, a := range rules {
		for _, b := range rules {
			if (a.ID() == b.ID()) != (a.Key() == b.Key()) {
				t.Errorf("rules %+v and %+v: IDs equal %v, keys equal %v", a, b, a.ID() == b.ID(), a.Key() == b.Key())
			}
		}
	}
	routes := []Route{
		{},
		{Table: MainTable, Dst: netip.MustParsePrefix("0.0.0.0/0")},
		{Table: MainTable, Dst: netip.MustParsePrefix("::/0")},
		{Table: 1001, Dst: netip.MustParsePrefix("198.51.100.0/24"), Metric: 100},
		{Table: 1001, Dst: netip.MustParsePrefix("198.51.100.0/24"), Metric: 100, ScopeLink: true},
		{Table: 1001, Dst: netip.MustParsePrefix("198.51.100.0/24")},
		{Table: 255, Dst: netip.MustParsePrefix("192.0.2.1/32"), Metric: -3},
	}
	for _, a := range routes {
		for _, b := range routes {
			if (a.ID() == b.ID()) != (a.Key() == b.Key()) {
				t.Errorf("routes %+v and %+v: IDs equal %v, keys equal %v", a, b, a.ID() == b.ID(), a.Key() == b.Key())
			}
		}
	}
}
