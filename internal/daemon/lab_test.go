package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/helper/helpertest"
	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/policy"
)

func TestMain(m *testing.M) {
	// uplinkd-helper runs the in-process daemon's http probes and checks
	// its dyndns2 and rfc2136 publishers.
	code := helpertest.HelperMain(func() int { return lab.GuardMain(m) })
	devBinary.remove()
	shippedBinary.remove()
	os.Exit(code)
}

const labConfig = `
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200

[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300

[[rule]]
name = "p2p"
uid = 108
uplink = "ppp1"
mark = 1
priority = 100
`

// running is a daemon started in-process inside a lab's router namespace.
type running struct {
	t      testing.TB
	logs   *logBuf // every record, as JSON
	lab    *lab.Lab
	d      *Daemon
	syncs  chan SyncResult
	first  SyncResult // the pass start() waited for
	cancel context.CancelFunc
	done   chan error
	socket string // the control socket
	// metrics, if set, is Options.MetricsListener.
	metrics net.Listener
}

func dualLab(t *testing.T) *lab.Lab {
	return lab.NewT(t, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: "ppp"}, {Name: "ppp1", Kind: "ppp"}}})
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "uplinkd.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// stateDirFor keeps tests off the host's /var/lib/uplinkd: a config that
// leaves [daemon] state_dir at its default gets a temporary directory
// (Options.StateDir); one that names its own keeps it (restart tests).
func stateDirFor(t testing.TB, configPath string) string {
	t.Helper()
	cfg, err := LoadConfig(configPath)
	if err != nil || cfg.Daemon.StateDir != policy.DefaultStateDir {
		return "" // a bad config fails in Open, as the test expects
	}
	return t.TempDir()
}

func start(t testing.TB, l *lab.Lab, configPath string) *running {
	t.Helper()
	return startWith(t, l, configPath, nil)
}

// startWith is start with a metrics listener.
func startWith(t testing.TB, l *lab.Lab, configPath string, metrics net.Listener) *running {
	t.Helper()
	return startWrapped(t, l, configPath, metrics, nil)
}

// startWrapped is startWith whose real firewall backend is handed to wrap
// (when not nil) before the loop starts, so a test can hold a write back.
func startWrapped(t testing.TB, l *lab.Lab, configPath string, metrics net.Listener, wrap func(Firewall) Firewall) *running {
	t.Helper()
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	r := &running{t: t, lab: l, syncs: make(chan SyncResult, 1024), done: make(chan error, 1), logs: &logBuf{}, metrics: metrics}
	logger := slog.New(slog.NewMultiHandler(
		slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}),
		slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if r.socket == "" {
		r.socket = filepath.Join(t.TempDir(), "c.sock")
	}
	r.d, err = Open(Options{ConfigPath: configPath, NetNS: ns, Logger: logger, ControlSocket: r.socket, MetricsListener: r.metrics,
		StateDir: stateDirFor(t, configPath), OnSync: func(s SyncResult) {
			select {
			case r.syncs <- s:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		r.d.fw = wrap(r.d.fw)
		r.d.rec.fw = r.d.fw
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.d.Run(ctx) }()
	t.Cleanup(r.stop)
	r.first = r.waitSync()
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("daemon: %v", err)
		}
	case <-time.After(waitLong):
		r.t.Error("daemon did not stop")
	}
}

// waitSync waits for the next reconcile pass and returns it.
func (r *running) waitSync() SyncResult {
	r.t.Helper()
	select {
	case s := <-r.syncs:
		return s
	case <-time.After(waitLong):
		r.t.Fatalf("no reconcile pass within %v", waitLong)
	}
	return SyncResult{}
}

// waitLong bounds the lab tests' waits for an event or a state: generous,
// so that a busy machine makes them slower, never failing.
const waitLong = 20 * time.Second

// eventually re-checks cond after every reconcile pass (and at most every
// 50 ms) until it holds or waitLong passes. Reading kernel state in a test
// is fine: it is the daemon that must not poll.
func (r *running) eventually(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for: %s\nrouter rules:\n%s\nroutes:\n%s", what,
				r.ip("rule"), r.ip("route", "show", "table", "all"))
		}
		select {
		case <-r.syncs:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *running) ip(args ...string) string {
	r.t.Helper()
	out, err := r.lab.Exec(r.lab.Router, append([]string{"ip"}, args...)...)
	if err != nil {
		r.t.Fatalf("ip %v: %v", args, err)
	}
	return out
}

func (r *running) has(text string, args ...string) func() bool {
	return func() bool { return strings.Contains(r.ip(args...), text) }
}

func (r *running) lacks(text string, args ...string) func() bool {
	return func() bool { return !strings.Contains(r.ip(args...), text) }
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

func TestLabStartRulesAndRoutes(t *testing.T) {
	l := dualLab(t)
	r := start(t, l, writeConfig(t, labConfig))
	a0, a1 := l.UplinkAddr("ppp0"), l.UplinkAddr("ppp1")
	r.eventually("from-rules, fwmark rule, tables and main default", func() bool {
		rules := r.ip("rule")
		return strings.Contains(rules, fmt.Sprintf("200:\tfrom %s lookup 200 proto 157", a0)) &&
			strings.Contains(rules, fmt.Sprintf("300:\tfrom %s lookup 201 proto 157", a1)) &&
			strings.Contains(rules, "100:\tfrom all fwmark 0x1/0xffff lookup 201 proto 157") &&
			strings.Contains(r.ip("route", "show", "table", "200"), "default dev ppp0 proto 157") &&
			strings.Contains(r.ip("route", "show", "table", "201"), "default dev ppp1 proto 157") &&
			strings.Contains(r.ip("route", "show", "table", "157"), "nexthop dev ppp0 weight 1")
	})
	if got := strings.TrimSpace(mustExec(t, l, l.Router, "sysctl", "-n", "net.ipv4.ip_forward")); got != "1" {
		t.Errorf("ip_forward = %q, want 1", got)
	}
	// Real traffic: from each uplink's address, through its own table.
	for _, a := range []string{a0.String(), a1.String()} {
		mustExec(t, l, l.Router, "ping", "-c1", "-W2", "-I", a, "192.0.2.1")
	}
}

func TestLabRedialMovesRule(t *testing.T) {
	l := dualLab(t)
	r := start(t, l, writeConfig(t, labConfig))
	old := l.UplinkAddr("ppp1")
	r.eventually("rule for the first address", r.has("from "+old.String()+" lookup 201", "rule"))
	// A re-created ppp1 starts from the default; uplinkd must set it again
	// (through a fresh sysctl file, not the one of the deleted device).
	mustExec(t, l, l.Router, "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0")
	res, err := l.Redial("ppp1")
	if err != nil {
		t.Fatal(err)
	}
	if res.New == old {
		t.Fatalf("redial kept the address %s", old)
	}
	r.eventually("new rule present, old gone, table default back", func() bool {
		rules := r.ip("rule")
		return strings.Contains(rules, "from "+res.New.String()+" lookup 201") &&
			!strings.Contains(rules, "from "+old.String()+" ") &&
			strings.Contains(r.ip("route", "show", "table", "201"), "default dev ppp1 proto 157") &&
			strings.Contains(r.ip("route", "show", "table", "157"), "nexthop dev ppp1")
	})
	mustExec(t, l, l.Router, "ping", "-c1", "-W2", "-I", res.New.String(), "192.0.2.1")
	r.eventually("rp_filter of the new ppp1 is loose", func() bool {
		return strings.TrimSpace(mustExec(t, l, l.Router, "sysctl", "-n", "net.ipv4.conf.ppp1.rp_filter")) == "2"
	})
}

func TestLabCarrierLossMovesDefault(t *testing.T) {
	l := dualLab(t)
	r := start(t, l, writeConfig(t, labConfig))
	r.eventually("multipath default", r.has("nexthop dev ppp1", "route", "show", "table", "157"))
	if _, err := l.SetCarrier("ppp0", false); err != nil {
		t.Fatal(err)
	}
	r.eventually("default via ppp1 only", r.has("default dev ppp1 proto 157", "route", "show", "table", "157"))
	// The main default now carries traffic via ppp1 alone.
	mustExec(t, l, l.Router, "ping", "-c1", "-W2", "192.0.2.1")
	if _, err := l.SetCarrier("ppp0", true); err != nil {
		t.Fatal(err)
	}
	r.eventually("multipath default back", r.has("nexthop dev ppp0", "route", "show", "table", "157"))
}

func TestLabRemovesLANDefaultRoute(t *testing.T) {
	l := dualLab(t)
	mustExec(t, l, l.Router, "ip", "route", "add", "default", "via", "10.0.0.2", "dev", "lan0", "metric", "50")
	r := start(t, l, writeConfig(t, labConfig))
	r.eventually("no default via lan0", r.lacks("dev lan0", "route", "show", "default"))
	// Added again later (dhclient on the LAN side, an admin): removed again.
	mustExec(t, l, l.Router, "ip", "route", "add", "default", "via", "10.0.0.2", "dev", "lan0", "metric", "60")
	r.eventually("no default via lan0 again", r.lacks("dev lan0", "route", "show", "default"))
}

func TestLabRepairsDeletedRule(t *testing.T) {
	l := dualLab(t)
	r := start(t, l, writeConfig(t, labConfig))
	a0 := l.UplinkAddr("ppp0").String()
	r.eventually("rule present", r.has("from "+a0+" lookup 200", "rule"))
	r.ip("rule", "del", "from", a0, "lookup", "200", "priority", "200")
	r.eventually("rule restored", r.has("from "+a0+" lookup 200", "rule"))
	r.ip("route", "del", "default", "table", "200")
	r.eventually("table route restored", r.has("default dev ppp0", "route", "show", "table", "200"))
}

func TestLabForeignStateSurvivesRunAndFlush(t *testing.T) {
	l := dualLab(t)
	mustExec(t, l, l.Router, "ip", "rule", "add", "from", "10.0.0.99", "lookup", "200", "priority", "250")
	mustExec(t, l, l.Router, "ip", "route", "add", "198.51.100.0/24", "dev", "ppp0", "table", "200")
	cfg := writeConfig(t, labConfig)
	r := start(t, l, cfg)
	r.eventually("owned rule present", r.has("lookup 201 proto 157", "rule"))
	if !strings.Contains(r.ip("rule"), "250:\tfrom 10.0.0.99 lookup 200") {
		t.Errorf("foreign rule gone after run:\n%s", r.ip("rule"))
	}
	r.stop()
	out := mustExec(t, l, l.Router, uplinkdBinary(t), "flush", "--config", cfg)
	t.Logf("flush:\n%s", out)
	if s := r.ip("rule"); strings.Contains(s, "proto 157") || !strings.Contains(s, "250:\tfrom 10.0.0.99 lookup 200") {
		t.Errorf("after flush want no owned and the foreign rule, got:\n%s", s)
	}
	if s := r.ip("route", "show", "table", "all"); strings.Contains(s, "proto 157") || !strings.Contains(s, "198.51.100.0/24 dev ppp0 table 200") {
		t.Errorf("after flush want no owned and the foreign route, got:\n%s", s)
	}
}

func TestLabRestartAdopts(t *testing.T) {
	l := dualLab(t)
	cfg := writeConfig(t, labConfig)
	r := start(t, l, cfg)
	r.eventually("converged", r.has("nexthop dev ppp1", "route", "show", "table", "157"))
	r.stop()
	rulesBefore, routesBefore := r.ip("rule"), r.ip("route", "show", "table", "all")
	nftBefore := mustExec(t, l, l.Router, "nft", "list", "ruleset")

	r2 := start(t, l, cfg)
	// The first pass of the new daemon must find nothing to do.
	if len(r2.first.Changes) != 0 {
		t.Errorf("restart changed things: %v", r2.first.Changes)
	}
	if got := r2.ip("rule"); got != rulesBefore {
		t.Errorf("ip rule differs after restart:\n--- before\n%s--- after\n%s", rulesBefore, got)
	}
	if got := r2.ip("route", "show", "table", "all"); got != routesBefore {
		t.Errorf("routes differ after restart:\n--- before\n%s--- after\n%s", routesBefore, got)
	}
	// The nftables table is loaded again in one atomic transaction (no gap,
	// no duplicate): the ruleset must come out byte-identical.
	if got := mustExec(t, l, l.Router, "nft", "list", "ruleset"); got != nftBefore {
		t.Errorf("nft ruleset differs after restart:\n--- before\n%s--- after\n%s", nftBefore, got)
	}
}

func TestLabBadReloadKeepsConfig(t *testing.T) {
	l := dualLab(t)
	cfg := writeConfig(t, labConfig)
	r := start(t, l, cfg)
	r.eventually("converged", r.has("lookup 201 proto 157", "rule"))
	if err := os.WriteFile(cfg, []byte(labConfig+"\n[[uplink]]\nname = \"ppp2\"\ntable = \"nope\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Reload(context.Background()); err == nil {
		t.Fatal("reload of a bad config succeeded")
	}
	// Still in force: a deleted owned rule is repaired from the old config.
	r.ip("rule", "del", "priority", "100")
	r.eventually("fwmark rule restored from the old config", r.has("fwmark 0x1/0xffff lookup 201", "rule"))
}

// An editor that truncates the file in place and a SIGHUP at the wrong
// moment: a reload to zero uplinks is refused, and the gateway keeps its
// routes, unless the file says allow_no_uplinks.
func TestLabReloadToNoUplinksRefused(t *testing.T) {
	l := dualLab(t)
	cfg := writeConfig(t, labConfig)
	r := start(t, l, cfg)
	r.eventually("converged", r.has("lookup 201 proto 157", "rule"))
	for _, text := range []string{"", "# being rewritten\n", "[daemon]\nlog_level = \"debug\"\n"} {
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := r.d.Reload(context.Background()); !errors.Is(err, policy.ErrNoUplinks) {
			t.Fatalf("reload to %q: %v, want ErrNoUplinks", text, err)
		}
	}
	r.ip("rule", "del", "priority", "100")
	r.eventually("fwmark rule restored from the old config", r.has("fwmark 0x1/0xffff lookup 201", "rule"))

	if err := os.WriteFile(cfg, []byte("[daemon]\nallow_no_uplinks = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatalf("reload with allow_no_uplinks: %v", err)
	}
	r.eventually("owned rules gone", func() bool { return !r.has("lookup 201 proto 157", "rule")() })
}

func mustExec(t *testing.T, l *lab.Lab, ns string, argv ...string) string {
	t.Helper()
	out, err := l.Exec(ns, argv...)
	if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return out
}

// builtBinary is uplinkd built once per test binary with some go build
// flags (and environment).
type builtBinary struct {
	once sync.Once
	path string
	err  error
}

func (bb *builtBinary) get(t testing.TB, env []string, flags ...string) string {
	t.Helper()
	bb.once.Do(func() {
		dir, err := os.MkdirTemp("", "uplinkd-bin-")
		if err != nil {
			bb.err = err
			return
		}
		bb.path = filepath.Join(dir, "uplinkd")
		if bb.err = helpertest.GoBuild(bb.path, "github.com/uplinkd/uplinkd/cmd/uplinkd", env, flags...); bb.err != nil {
			return
		}
		// Beside it, where the daemon looks for its helper.
		_, bb.err = helpertest.BuildHelper(dir, env, flags...)
	})
	if bb.err != nil {
		t.Fatal(bb.err)
	}
	return bb.path
}

// remove deletes the binary's directory: each test binary builds its own,
// and /tmp would otherwise keep one per run (18 MB each).
func (bb *builtBinary) remove() {
	if bb.path != "" {
		os.RemoveAll(filepath.Dir(bb.path))
	}
}

var devBinary builtBinary

// uplinkdBinary builds the real binary once, for the tests that drive the CLI.
func uplinkdBinary(t testing.TB) string { return devBinary.get(t, nil) }

func TestLabPlanChangesNothing(t *testing.T) {
	l := dualLab(t)
	cfg := writeConfig(t, fmt.Sprintf("[daemon]\nstate_dir = %q\n", t.TempDir())+labConfig)
	before := mustExec(t, l, l.Router, "ip", "rule")
	routesBefore := mustExec(t, l, l.Router, "ip", "route", "show", "table", "all")
	out := mustExec(t, l, l.Router, uplinkdBinary(t), "plan", "--config", cfg)
	a0 := l.UplinkAddr("ppp0").String()
	for _, want := range []string{
		"ip rule add priority 200 from " + a0 + " lookup 200 proto 157",
		"ip route add default dev ppp0 table 200 proto 157 scope link metric 0",
		"ip route add default table 157 proto 157 metric 0 nexthop dev ppp0 weight 1 nexthop dev ppp1 weight 1",
		"sysctl -w net.ipv4.ip_forward=1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if got := mustExec(t, l, l.Router, "ip", "rule"); got != before {
		t.Errorf("plan changed rules:\n%s", got)
	}
	if got := mustExec(t, l, l.Router, "ip", "route", "show", "table", "all"); got != routesBefore {
		t.Errorf("plan changed routes:\n%s", got)
	}
	// The printed commands are runnable: applying them by hand converges,
	// after which plan has nothing left to do.
	if !strings.Contains(out, "# firewall (nftables)") || !strings.Contains(out, "table ip uplinkd") {
		t.Errorf("plan lacks the firewall batch:\n%s", out)
	}
	if rs := mustExec(t, l, l.Router, "nft", "list", "ruleset"); strings.Contains(rs, "uplinkd") {
		t.Errorf("plan created the firewall table:\n%s", rs)
	}
	routing, _, _ := strings.Cut(out, "# firewall")
	for _, line := range strings.Split(strings.TrimSpace(routing), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mustExec(t, l, l.Router, strings.Fields(line)...)
	}
	if again := mustExec(t, l, l.Router, uplinkdBinary(t), "plan", "--config", cfg); !strings.Contains(again, "# routing: nothing to change") {
		t.Errorf("plan after applying its own output:\n%s", again)
	}
}

// TestLabPlanShowsDefaultNumbers: a file that leaves table and
// rule_priority out gets 1000+N and 1000+100×N, plan says so and its commands
// use them; a file with explicit numbers prints no such line (its plan is
// as it was before defaults existed).
func TestLabPlanShowsDefaultNumbers(t *testing.T) {
	l := dualLab(t)
	minimal := "[[uplink]]\nname = \"ppp0\"\n\n[[uplink]]\nname = \"ppp1\"\ntable = 201\n"
	out := mustExec(t, l, l.Router, uplinkdBinary(t), "plan", "--config", writeConfig(t, minimal))
	a0, a1 := l.UplinkAddr("ppp0").String(), l.UplinkAddr("ppp1").String()
	for _, want := range []string{
		"# uplink ppp0: table 1001, rule_priority 1100 (defaults for position 1)\n",
		"# uplink ppp1: rule_priority 1200 (defaults for position 2)\n",
		"ip rule add priority 1100 from " + a0 + " lookup 1001 proto 157",
		"ip rule add priority 1200 from " + a1 + " lookup 201 proto 157",
		"ip route add default dev ppp0 table 1001 proto 157",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	explicit := mustExec(t, l, l.Router, uplinkdBinary(t), "plan", "--config", writeConfig(t, labConfig))
	if strings.Contains(explicit, "defaults for position") || !strings.Contains(explicit, "lookup 200 proto 157") {
		t.Errorf("plan of a file with explicit numbers:\n%s", explicit)
	}
}

// TestLabRepairRateLimited: another actor deletes an owned rule again and
// again; uplinkd restores it at once a few times (the burst), then at most
// about once a second, and meanwhile still applies other changes. The fight
// lasts until each of these has been seen (however long a busy machine
// takes), and the bound on restores follows from how long it lasted.
func TestLabRepairRateLimited(t *testing.T) {
	l := dualLab(t)
	r := start(t, l, writeConfig(t, labConfig))
	a0 := l.UplinkAddr("ppp0").String()
	r.eventually("rule present", r.has("from "+a0+" lookup 200", "rule"))

	begin := time.Now()
	var stopFight atomic.Bool
	fightDone := make(chan struct{})
	go func() {
		defer close(fightDone)
		for !stopFight.Load() {
			_, _ = l.Exec(l.Router, "ip", "rule", "del", "priority", "200")
			time.Sleep(10 * time.Millisecond)
		}
	}()
	endFight := func() {
		stopFight.Store(true)
		<-fightDone
	}
	defer endFight()
	restores, deferred := 0, 0
	failedOver := false
	carrierDropped := false
	for deadline := time.Now().Add(waitLong); !failedOver || restores <= repairBurst || deferred == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("after %v of fighting: %d restores, %d deferred passes, failover seen %v (carrier dropped %v)",
				waitLong, restores, deferred, failedOver, carrierDropped)
		}
		if !carrierDropped && restores >= repairBurst {
			// A failover in the middle of the fight (the burst used up)
			// must not wait for it: the fight goes on until it is seen.
			if _, err := l.SetCarrier("ppp1", false); err != nil {
				t.Fatal(err)
			}
			carrierDropped = true
		}
		select {
		case s := <-r.syncs:
			if s.Deferred {
				deferred++
			}
			for _, c := range s.Changes {
				if c.Rule.Priority == 200 && c.Rule.Src.IsValid() {
					restores++
				}
				if carrierDropped && c.Route.Table == policy.DefaultTable && len(c.Route.Nexthops) == 1 && c.Route.Nexthops[0].Dev == "ppp0" {
					failedOver = true
				}
			}
		case <-time.After(50 * time.Millisecond):
		}
	}
	endFight()
	// Counted after the fight, so that every pass of it is in: a burst,
	// then one a second (one more for timer slack).
	for len(r.syncs) > 0 {
		for _, c := range (<-r.syncs).Changes {
			if c.Rule.Priority == 200 && c.Rule.Src.IsValid() {
				restores++
			}
		}
	}
	fought := time.Since(begin)
	t.Logf("restores %d, deferred passes %d in %v", restores, deferred, fought)
	if most := repairBurst + int(fought/time.Second) + 2; restores > most {
		t.Errorf("restored the rule %d times during a %v fight, want at most %d", restores, fought, most)
	}
	r.eventually("rule restored after the fight", r.has("from "+a0+" lookup 200", "rule"))
}

// TestLabSystemdNotify: under systemd (NOTIFY_SOCKET, WATCHDOG_USEC) the
// daemon says READY=1 after its first pass, a STATUS= line with the uplinks,
// and pings the watchdog from its loop.
func TestLabSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")

	l := dualLab(t)
	start(t, l, writeConfig(t, labConfig))
	seen := map[string]string{}
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for seen["READY"] == "" || seen["STATUS"] == "" || seen["WATCHDOG"] == "" {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("notify messages so far %v: %v", seen, err)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				seen[k] = v
			}
		}
	}
	if seen["READY"] != "1" || seen["WATCHDOG"] != "1" || !strings.Contains(seen["STATUS"], "ppp0=active(") {
		t.Errorf("notify messages: %v", seen)
	}
}

// TestLabQuickBounces: `ip link set ppp0 down; ip link set ppp0 up`, six
// times in a row as fast as ip runs. The kernel drops ppp0's routes on each
// down; uplinkd puts them back at once without touching its repair budget
// (no repair record, no pass holding repairs back) and logs and hooks the
// down and up for every bounce it noticed, down before up.
func TestLabQuickBounces(t *testing.T) {
	l := dualLab(t)
	trace := newTrace(t)
	hook := hookScript(t, trace)
	cfg := strings.Replace(labConfig, "rule_priority = 200\n", "rule_priority = 200\n  [[uplink.hook]]\n  on = [\"link-down\", \"link-up\"]\n  command = [\""+hook+"\"]\n", 1)
	r := start(t, l, writeConfig(t, cfg))
	r.eventually("converged", func() bool {
		return strings.Contains(r.ip("route", "show", "table", "200"), "default dev ppp0 proto 157") &&
			strings.Contains(r.ip("route", "show", "table", "157"), "nexthop dev ppp0")
	})
	// ppp0 alone carries the main default, so each bounce drops it too.
	if _, err := l.SetCarrier("ppp1", false); err != nil {
		t.Fatal(err)
	}
	r.eventually("default via ppp0 alone", r.has("default dev ppp0 proto 157", "route", "show", "table", "157"))
	for len(r.syncs) > 0 {
		<-r.syncs
	}

	const bounces = 6
	// One ip process for all of them: faster than the loop's passes, so
	// most bounces happen between two passes.
	batch := filepath.Join(t.TempDir(), "bounces")
	if err := os.WriteFile(batch, []byte(strings.Repeat("link set ppp0 down\nlink set ppp0 up\n", bounces)), 0o644); err != nil {
		t.Fatal(err)
	}
	mustExec(t, l, l.Router, "ip", "-batch", batch)
	r.eventually("ppp0's routes back", func() bool {
		return strings.Contains(r.ip("route", "show", "table", "200"), "default dev ppp0 proto 157") &&
			strings.Contains(r.ip("route", "show", "table", "157"), "default dev ppp0 proto 157")
	})
	for len(r.syncs) > 0 {
		if s := <-r.syncs; s.Deferred {
			t.Errorf("a pass held repairs back during the bounces: %v", s.Changes)
		}
	}
	if recs := r.logs.records(map[string]any{"msg": "undoing a change someone else made to what uplinkd keeps"}); len(recs) != 0 {
		t.Errorf("bounces counted as repairs: %v", recs)
	}
	if recs := r.logs.records(map[string]any{"level": "ERROR"}); len(recs) != 0 {
		t.Errorf("errors logged: %v", recs)
	}
	// The routes can be back while the loop still has the later bounces'
	// events queued: wait until the records stop changing for a while
	// before counting them.
	var downs, ups int
	count := func() (int, int) {
		return len(r.logs.records(map[string]any{"msg": "link down", "event": "link-down", "uplink": "ppp0"})),
			len(r.logs.records(map[string]any{"msg": "link up", "event": "link-up", "uplink": "ppp0"}))
	}
	for deadline, stable := time.Now().Add(5*time.Second), time.Now(); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		d, u := count()
		if d != downs || u != ups {
			downs, ups, stable = d, u, time.Now()
		} else if time.Since(stable) > 300*time.Millisecond {
			break
		}
	}
	unseen := len(r.logs.records(map[string]any{"msg": "link down", "reason": "link bounced between passes"}))
	t.Logf("%d bounces: %d link-down and %d link-up records, %d of them for bounces between passes", bounces, downs, ups, unseen)
	if downs < 1 || ups != downs+1 || downs > bounces {
		t.Errorf("link-down %d, link-up %d records for %d bounces; want each noticed bounce logged as a pair", downs, ups, bounces)
	}
	want := make([]string, 0, 2*downs)
	for range downs {
		want = append(want, "link-down", "link-up")
	}
	waitUntil(t, "the hooks", func() bool { return len(trace.lines()) >= len(want) })
	if got := trace.lines(); !slices.Equal(got, want) {
		t.Errorf("hooks ran %q, want %q", got, want)
	}
}

// TestLabAddressBeforeLinkUp: a redial whose address arrives while the link
// is still down (pppd's order) makes `ip route add default dev ppp1 table
// 201` fail with "network is down". That is not an error: it is logged at
// info and applied on the link's own up event.
func TestLabAddressBeforeLinkUp(t *testing.T) {
	l := dualLab(t)
	r := start(t, l, writeConfig(t, labConfig))
	r.eventually("converged", r.has("default dev ppp1 proto 157", "route", "show", "table", "201"))
	mustExec(t, l, l.Router, "ip", "link", "set", "ppp1", "down")
	mustExec(t, l, l.Router, "ip", "addr", "flush", "dev", "ppp1")
	const newAddr = "100.64.1.77"
	mustExec(t, l, l.Router, "ip", "addr", "add", newAddr+"/32", "peer", l.ISPAddr("ppp1").String()+"/32", "dev", "ppp1")
	notUp := func() bool {
		return len(r.logs.records(map[string]any{"msg": "link not up yet; applying again on its link-up event"})) > 0
	}
	r.eventually("a pass on the address of the down link", notUp)
	mustExec(t, l, l.Router, "ip", "link", "set", "ppp1", "up")
	r.eventually("ppp1 rewritten for its new address", func() bool {
		return strings.Contains(r.ip("rule"), "from "+newAddr+" lookup 201") &&
			strings.Contains(r.ip("route", "show", "table", "201"), "default dev ppp1 proto 157") &&
			strings.Contains(r.ip("route", "show", "table", "157"), "nexthop dev ppp1")
	})
	if recs := r.logs.records(map[string]any{"level": "ERROR"}); len(recs) != 0 {
		t.Errorf("errors logged for a normal redial: %v", recs)
	}
}
