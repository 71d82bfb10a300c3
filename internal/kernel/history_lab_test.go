package kernel

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/policy"
)

// TestLabHistoryAcrossResyncs: ppp0 bounces (`ip link set ppp0 down; up`)
// while the mirror is made to dump again at the worst moments: with the
// bounces' notifications still queued on the subscription (the dump shows
// the link up again, the queued down and up arrive after it), after a
// failed write, after EEXIST, and after the subscription overflowed. The
// link history must then hold exactly as many down transitions as the
// kernel itself counted (carrier_down_count in the router's sysfs): none
// lost, none invented. The old mirror counted the queued down again after
// the dump: the phantom bounce the loop logged and hooked.
func TestLabHistoryAcrossResyncs(t *testing.T) {
	tests := []struct {
		name       string
		readBuffer int
		// round bounces ppp0 (bounce) and forces a resync around it.
		round func(f *fixture, bounce func(n int))
	}{
		{"dump with the bounces' notifications queued", 0, func(f *fixture, bounce func(int)) {
			// Holding the mirror's lock stops the watcher in Update: the
			// notifications wait on the socket while the dump (another
			// socket) already sees the link up again.
			f.k.m.mu.Lock()
			bounce(2)
			f.k.m.stale = true
			err := f.k.m.load(f.k.dumpAll)
			f.k.m.mu.Unlock()
			f.must(err, "dump")
		}},
		{"a failed write between down and up", 0, func(f *fixture, bounce func(int)) {
			f.must(f.h.LinkSetDown(f.link("ppp0")), "ppp0 down")
			// A gateway that is on no link: ENETUNREACH, a write the
			// mirror cannot explain, so the next snapshot dumps.
			bad := policy.Route{Table: tableA, Dst: netip.MustParsePrefix("0.0.0.0/0"), Protocol: policy.Protocol,
				Nexthops: []policy.Nexthop{{Gateway: netip.MustParseAddr("203.0.113.77"), Dev: "eth1"}}}
			obs := f.mirrorOnlyStale()
			if err := f.k.Apply([]policy.Change{{Op: policy.OpAddRoute, Route: bad}}, obs); err == nil {
				f.t.Fatal("the bad route was accepted")
			}
			f.must(f.h.LinkSetUp(f.link("ppp0")), "ppp0 up")
			bounce(1)
			_, err := f.k.Snapshot()
			f.must(err, "snapshot")
		}},
		{"EEXIST on a route the mirror did not show", 0, func(f *fixture, bounce func(int)) {
			eth1 := f.link("eth1")
			r := &netlink.Route{Dst: ipn("192.0.2.200/32"), LinkIndex: eth1.Attrs().Index, Table: tableB, Protocol: policy.Protocol}
			f.k.m.mu.Lock() // its notification waits: the mirror does not have it yet
			f.must(f.h.RouteAdd(r), "route add")
			bounce(1)
			f.k.m.mu.Unlock()
			obs := f.mirrorOnlyStale()
			same := policy.Route{Table: tableB, Dst: netip.MustParsePrefix("192.0.2.200/32"), Protocol: policy.Protocol, ScopeLink: true,
				Nexthops: []policy.Nexthop{{Dev: "eth1"}}}
			_ = f.k.Apply([]policy.Change{{Op: policy.OpAddRoute, Route: same}}, obs)
			bounce(1)
			_, err := f.k.Snapshot()
			f.must(err, "snapshot")
			f.must(f.h.RouteDel(r), "route del")
		}},
		{"subscription overflow", 8 << 10, func(f *fixture, bounce func(int)) {
			// Each round starts from an empty queue, so that its flood
			// overflows it afresh.
			f.syncStale()
			dumps := f.k.Dumps()
			f.k.m.mu.Lock() // the watcher stops reading: the socket fills up
			bounce(2)
			for i := range 300 {
				r := netlink.NewRule()
				r.Family, r.Priority, r.Table = unix.AF_INET, 25000+i, 3001
				f.must(f.h.RuleAdd(r), "flood rule")
				f.must(f.h.RuleDel(r), "flood rule del")
			}
			bounce(1)
			f.k.m.mu.Unlock()
			// The watcher reports the overflow: the mirror goes stale and
			// the next snapshot dumps.
			waitFor(f.t, "the overflow to make the mirror stale", func() bool {
				f.k.m.mu.Lock()
				defer f.k.m.mu.Unlock()
				return f.k.m.stale
			})
			_, err := f.k.Snapshot()
			f.must(err, "snapshot")
			if f.k.Dumps() == dumps {
				f.t.Fatal("no dump after the overflow")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureBuffer(t, true, tt.readBuffer)
			truth := func() int {
				out, err := f.l.Exec(f.l.Router, "cat", "/sys/class/net/ppp0/carrier_down_count")
				f.must(err, "read carrier_down_count")
				n, err := strconv.Atoi(strings.TrimSpace(out))
				f.must(err, "parse carrier_down_count")
				return n
			}
			bounce := func(n int) {
				for range n {
					f.must(f.h.LinkSetDown(f.link("ppp0")), "ppp0 down")
					f.must(f.h.LinkSetUp(f.link("ppp0")), "ppp0 up")
				}
			}
			f.sync()
			start, startSeq := truth(), f.mirrorOnly().LinkSeq
			const rounds = 5
			for range rounds {
				tt.round(f, bounce)
			}
			// Settled: every notification is in (a marker after them all),
			// and the mirror agrees with a fresh dump.
			obs := f.syncStale()
			f.check("after the bounces")
			if l := obs.Links["ppp0"]; !l.Up || !l.Carrier {
				t.Fatalf("ppp0 in the mirror after the bounces: %+v", l)
			}
			want := truth() - start
			recs, complete := f.k.LinkHistory(startSeq, f.mirrorOnly().LinkSeq)
			got := linklog.Summarize(recs)["ppp0"].Downs
			t.Logf("%d down transitions in the kernel, %d in the history (%d dumps)", want, got, f.k.Dumps())
			if !complete || got != want {
				var lines []string
				for _, r := range recs {
					if r.Name == "ppp0" {
						lines = append(lines, r.String())
					}
				}
				t.Fatalf("history has %d downs of ppp0, the kernel counted %d (complete %v):\n%s", got, want, complete, strings.Join(lines, "\n"))
			}
		})
	}
}

// mirrorOnlyStale reads the mirror as it is, stale or not.
func (f *fixture) mirrorOnlyStale() policy.Observed {
	f.k.m.mu.Lock()
	defer f.k.m.mu.Unlock()
	return f.k.m.snapshot()
}

// syncStale is sync for a mirror that may be stale: it dumps when it is
// (as the loop's next snapshot would) until the marker rule is in.
func (f *fixture) syncStale() policy.Observed {
	f.t.Helper()
	f.seq++
	prio := 20000 + f.seq
	r := netlink.NewRule()
	r.Family, r.Priority, r.Table = unix.AF_INET, prio, 3000
	f.must(f.h.RuleAdd(r), "marker rule")
	var obs policy.Observed
	waitFor(f.t, fmt.Sprintf("marker rule %d in the mirror", prio), func() bool {
		var err error
		obs, err = f.k.Snapshot()
		f.must(err, "snapshot")
		for _, r := range obs.Rules {
			if r.Priority == prio {
				return true
			}
		}
		return false
	})
	return obs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
