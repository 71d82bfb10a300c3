package daemon

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/delegstate"
	"github.com/uplinkd/uplinkd/policy"
)

// lan6LoopConfig is two ppp uplinks with IPv6 on behind lan0 with
// [lan.ipv6] mode prefix.
const lan6LoopConfig = `
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]
[lan.ipv6]
mode = "prefix"

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200
ipv6 = true

[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300
ipv6 = true
`

// prefixRules are the kernel's IPv6 rules of uplinkd with a source
// shorter than /128 (the delegated prefixes'), as "priority src>table",
// the table "main" for `lookup main suppress_prefixlength 0`, sorted.
func (l *loop) prefixRules() []string {
	l.k.mu.Lock()
	defer l.k.mu.Unlock()
	var out []string
	for _, r := range l.k.obs.Rules {
		if r.IPv6 && r.Protocol == policy.Protocol && r.Src.IsValid() && r.Src.Bits() < 128 {
			table := strconv.Itoa(r.Table)
			if r.Table == policy.MainTable && r.SuppressDefault {
				table = "main"
			}
			out = append(out, strconv.Itoa(r.Priority)+" "+r.Src.String()+">"+table)
		}
	}
	slices.Sort(out)
	return out
}

// lan6Rules are the rules of the delegated prefixes in lan6LoopConfig:
// `lookup main suppress_prefixlength 0` at 199 (the lowest rule_priority,
// ppp0's 200, minus 1) and the uplink's table at its rule_priority.
func lan6Rules(byUplink map[string][]string) []string {
	var out []string
	for uplink, ps := range byUplink {
		for _, p := range ps {
			out = append(out, "199 "+p+">main")
			if uplink == "ppp0" {
				out = append(out, "200 "+p+">200")
			} else {
				out = append(out, "300 "+p+">201")
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestLoopDelegated drives `uplinkd event --delegated` through the
// daemon's control handler on fakes: an interface no uplink has is
// refused; a learned prefix gets its rules (`lookup main
// suppress_prefixlength 0`, then its uplink's table) in the pass that
// follows and lands in delegated.json; a new prefix is added before the
// former one goes; a restart keeps them; the valid lifetime ends the
// former one (the deadline timer brings the pass); none ends the
// delegation, and the rules go with it.
func TestLoopDelegated(t *testing.T) {
	verifyNoLeaks(t)
	stateDir := t.TempDir()
	l := startLoop(t, loopOpts{config: lan6LoopConfig, obs: twoPPP(), stateDir: stateDir})
	h := ctlHandler{l.d}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u32 := func(v uint32) *uint32 { return &v }

	if err := h.Event(ctx, control.Event{Iface: "ppp9", Delegated: "2001:db8:a::/56"}); err == nil || !strings.Contains(err.Error(), `no [[uplink]] has interface "ppp9"`) {
		t.Errorf("unknown interface: %v", err)
	}
	if err := h.Event(ctx, control.Event{Iface: "ppp0", Delegated: "2001:db8:a::/56", ValidLifetime: u32(3600)}); err != nil {
		t.Fatal(err)
	}
	l.pass()
	if got := l.prefixRules(); !slices.Equal(got, lan6Rules(map[string][]string{"ppp0": {"2001:db8:a::/56"}})) {
		t.Errorf("after the delegation: %q", got)
	}
	if recs := l.logs.records(map[string]any{"event": "delegated", "uplink": "ppp0", "prefix": "2001:db8:a::/56", "level": "INFO"}); len(recs) != 1 {
		t.Errorf("%d records of the delegation, want 1", len(recs))
	}
	set, err := delegstate.Load(delegstate.Path(stateDir))
	if err != nil || len(set["ppp0"]) != 1 || set["ppp0"][0].ValidUntil.Sub(l.clk.Now()) != time.Hour {
		t.Errorf("state file: %+v, %v", set, err)
	}

	// A renewal of the same prefix brings no pass.
	if err := h.Event(ctx, control.Event{Iface: "ppp0", Delegated: "2001:db8:a::/56", ValidLifetime: u32(3600)}); err != nil {
		t.Fatal(err)
	}
	l.quiet()

	// Redial with a new prefix: both rules, the new one added.
	if err := h.Event(ctx, control.Event{Iface: "ppp0", Delegated: "2001:db8:b::/56"}); err != nil {
		t.Fatal(err)
	}
	res := l.pass()
	if got := l.prefixRules(); !slices.Equal(got, lan6Rules(map[string][]string{"ppp0": {"2001:db8:a::/56", "2001:db8:b::/56"}})) {
		t.Errorf("after the new prefix: %q", got)
	}
	var added []string
	for _, c := range res.Changes {
		if c.Op == policy.OpDelRule {
			t.Errorf("the new prefix removed a rule: %s", c.Command())
		}
		if c.Op == policy.OpAddRule {
			added = append(added, c.Rule.IPRule())
		}
	}
	// main's specific routes first, then the uplink's table.
	if want := []string{
		"priority 199 from 2001:db8:b::/56 lookup main suppress_prefixlength 0 proto 157",
		"priority 200 from 2001:db8:b::/56 lookup 200 proto 157",
	}; !slices.Equal(added, want) {
		t.Errorf("the new prefix added %q, want %q", added, want)
	}
	if err := h.Event(ctx, control.Event{Iface: "ppp1", Delegated: "2001:db8:c::/48"}); err != nil {
		t.Fatal(err)
	}
	l.pass()

	// A restart keeps them.
	l.stop()
	l = startLoop(t, loopOpts{config: lan6LoopConfig, obs: twoPPP(), stateDir: stateDir})
	h = ctlHandler{l.d}
	if got := l.prefixRules(); !slices.Equal(got, lan6Rules(map[string][]string{"ppp0": {"2001:db8:a::/56", "2001:db8:b::/56"}, "ppp1": {"2001:db8:c::/48"}})) {
		t.Errorf("after a restart: %q", got)
	}

	// The former prefix's valid lifetime ends: the deadline brings a pass.
	// The restarted loop arms its deadline timer after the first pass is
	// reported; an Advance before that would leave it armed in the past.
	waitUntil(t, "the valid lifetime's deadline to be armed", func() bool {
		return slices.ContainsFunc(l.clk.Pending(), func(d time.Duration) bool { return d > 0 && d <= time.Hour })
	})
	l.clk.Advance(time.Hour)
	l.pass()
	if got := l.prefixRules(); !slices.Equal(got, lan6Rules(map[string][]string{"ppp0": {"2001:db8:b::/56"}, "ppp1": {"2001:db8:c::/48"}})) {
		t.Errorf("after the valid lifetime: %q", got)
	}
	if recs := l.logs.records(map[string]any{"event": "delegated", "prefix": "2001:db8:a::/56", "msg": "delegated prefix expired"}); len(recs) != 1 {
		t.Errorf("%d expiry records, want 1", len(recs))
	}

	// none ends ppp0's delegation.
	if err := h.Event(ctx, control.Event{Iface: "ppp0", Delegated: control.DelegatedNone}); err != nil {
		t.Fatal(err)
	}
	l.pass()
	if got := l.prefixRules(); !slices.Equal(got, lan6Rules(map[string][]string{"ppp1": {"2001:db8:c::/48"}})) {
		t.Errorf("after none: %q", got)
	}
	if set, err := delegstate.Load(delegstate.Path(stateDir)); err != nil || len(set) != 1 || len(set["ppp1"]) != 1 {
		t.Errorf("state file after none: %+v, %v", set, err)
	}

	// A corrupt file is moved aside at start and reported.
	l.stop()
	if err := os.WriteFile(delegstate.Path(stateDir), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	l = startLoop(t, loopOpts{config: lan6LoopConfig, obs: twoPPP(), stateDir: stateDir})
	if got := l.prefixRules(); len(got) != 0 {
		t.Errorf("after a corrupt file: %q", got)
	}
	if _, err := os.Stat(delegstate.Path(stateDir) + ".bad"); err != nil {
		t.Error(err)
	}
	if recs := l.logs.records(map[string]any{"event": "delegated", "level": "ERROR", "reason": "corrupt"}); len(recs) != 1 {
		t.Errorf("%d error records for the corrupt file, want 1", len(recs))
	}
}
