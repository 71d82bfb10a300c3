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
