package firewall

import "testing"

// TestDualCarry: the sum of an uplink's IPv4 and IPv6 counts never goes
// backwards when one family's chains are written again (its reading
// restarts at zero); an interface without IPv6 counts keeps its plain
// IPv4 reading.
func TestDualCarry(t *testing.T) {
	in := func(b uint64) Traffic { return Traffic{In: Count{Packets: b, Bytes: 100 * b}} }
	var c dualCarry
	step := func(v4, v6, plain uint64) Traffic {
		out := map[string]Traffic{"eth1": in(v4), "ppp0": in(plain)}
		c.addTo(out, map[string]Traffic{"eth1": in(v6)})
		if out["ppp0"] != in(plain) {
			t.Fatalf("an IPv4-only interface changed: %+v", out["ppp0"])
		}
		return out["eth1"]
	}
	for i, s := range []struct{ v4, v6, plain, want uint64 }{
		{10, 5, 3, 15},
		{12, 7, 4, 19},
		{13, 0, 1, 20}, // IPv6 chains rewritten: 7 carried
		{14, 2, 2, 23},
		{0, 3, 0, 24}, // IPv4 chains rewritten: 14 carried
		{1, 3, 0, 25},
	} {
		if got := step(s.v4, s.v6, s.plain); got != in(s.want) {
			t.Errorf("step %d: %+v, want %+v", i, got, in(s.want))
		}
	}
}
