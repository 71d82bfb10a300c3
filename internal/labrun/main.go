// Command labrun runs uplinkd inside a throw-away lab (internal/lab): a router
// namespace with ppp-like uplinks, one ISP namespace per uplink, an "internet"
// namespace and a LAN client. It is what `make run` uses to try the daemon on
// a developer machine without touching the machine's own network namespace.
//
//	go run ./internal/labrun -uplinkd ./uplinkd -config contrib/lab.toml [-uplinks ppp0:ppp,ppp1:ppp] [-demo]
//
// With -demo it plays a cycle of uplink events (redial, carrier loss, carrier
// back) so the daemon's reactions can be watched. Ctrl-C or SIGTERM stops the
// daemon and removes every namespace.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

func main() {
	os.Exit(run())
}

func run() int {
	bin := flag.String("uplinkd", "", "path of the uplinkd binary to run in the router namespace (required)")
	cfg := flag.String("config", "contrib/lab.toml", "uplinkd configuration file")
	uplinks := flag.String("uplinks", "ppp0:ppp,ppp1:ppp", "comma-separated NAME[:KIND] uplinks, KIND ppp or ethernet (default: ppp for ppp*, else ethernet)")
	demo := flag.Bool("demo", false, "cycle through uplink events (redial, carrier loss, carrier back)")
	every := flag.Duration("demo-interval", 15*time.Second, "time between -demo events")
	flag.Parse()

	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stdout, "labrun: "+format+"\n", args...)
	}
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "labrun: -uplinkd BIN is required")
		flag.Usage()
		return 2
	}
	spec, err := parseUplinks(*uplinks)
	if err != nil {
		fmt.Fprintf(os.Stderr, "labrun: -uplinks: %v\n", err)
		return 2
	}
	binPath, err := resolveBinary(*bin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "labrun: -uplinkd: %v\n", err)
		return 2
	}
	cfgPath, err := filepath.Abs(*cfg)
	if err == nil {
		_, err = os.Stat(cfgPath)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "labrun: -config: %v\n", err)
		return 2
	}
	if reason := lab.Unsupported(); reason != "" {
		fmt.Fprintf(os.Stderr, "labrun: cannot build a lab here: %s\n", reason)
		return 1
	}
	if removed, err := lab.SweepStale(); err != nil {
		logf("warning: sweeping stale lab namespaces: %v", err)
	} else if len(removed) > 0 {
		logf("removed %d namespaces left by dead runs", len(removed))
	}

	// Signals are caught before the lab exists so that a Ctrl-C during the
	// build still ends in cleanup rather than in stale namespaces.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	l, err := lab.New(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "labrun: %v\n", err)
		return 1
	}
	// Give the daemon time to remove what it owns on SIGTERM.
	l.KillGrace = 5 * time.Second
	closeLab := func() {
		logf("stopping uplinkd and removing namespaces of %s", l.ID())
		// Further signals while closing must not kill us half-way.
		go func() {
			for range sigs {
				logf("still cleaning up, please wait")
			}
		}()
		if err := l.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "labrun: cleanup: %v\n", err)
		}
	}
	select {
	case sig := <-sigs:
		logf("%v during setup", sig)
		closeLab()
		return 1
	default:
	}

	printBanner(l, binPath, cfgPath, *demo, *every)

	// The daemon's process group is its own (lab.Start), so a terminal
	// Ctrl-C reaches only labrun, which then stops the daemon with SIGTERM.
	daemon, err := l.StartWith(l.Router, lab.StartOptions{Stdout: os.Stdout, Stderr: os.Stdout},
		binPath, "run", "--config", cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "labrun: %v\n", err)
		closeLab()
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- l.Wait(daemon) }()

	var tick <-chan time.Time
	if *demo && len(spec.Uplinks) > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	d := newDemo(l, spec)
	for {
		select {
		case sig := <-sigs:
			logf("%v", sig)
			closeLab()
			return 0
		case err := <-exited:
			if err != nil {
				logf("uplinkd exited: %v", err)
			} else {
				logf("uplinkd exited")
			}
			closeLab()
			if err != nil {
				return 1
			}
			return 0
		case <-tick:
			logf("demo: %s", d.step())
		}
	}
}

func parseUplinks(s string) (lab.Spec, error) {
	var spec lab.Spec
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, kind, ok := strings.Cut(item, ":")
		if !ok {
			kind = lab.KindEthernet
			if strings.HasPrefix(name, "ppp") {
				kind = lab.KindPPP
			}
		}
		spec.Uplinks = append(spec.Uplinks, lab.UplinkSpec{Name: name, Kind: kind})
	}
	if len(spec.Uplinks) == 0 {
		return spec, errors.New("no uplinks")
	}
	return spec, nil // names and kinds are validated by lab.New
}

// resolveBinary makes the daemon path absolute so the banner's commands
// work from any directory.
func resolveBinary(bin string) (string, error) {
	if !strings.Contains(bin, "/") {
		return exec.LookPath(bin)
	}
	p, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

func printBanner(l *lab.Lab, bin, cfg string, demo bool, every time.Duration) {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("")
	w("=== uplinkd lab %s ===", l.ID())
	w("router  %-24s uplinkd runs here; %s %s/24 (LAN)", l.Router, lab.LANIface, lab.LANRouterAddr)
	for i, u := range l.Uplinks() {
		how := fmt.Sprintf("%s peer %s (ppp-like)", l.UplinkAddr(u.Name), l.ISPAddr(u.Name))
		if u.Kind == lab.KindEthernet {
			how = fmt.Sprintf("%s/24 gateway %s (ethernet)", l.UplinkAddr(u.Name), l.ISPAddr(u.Name))
		}
		w("        %-24s %s: %s", "", u.Name, how)
		w("isp%-4d %-24s far end of %s: %s %s, %s 198.18.%d.1/24", i, l.ISPs[i], u.Name, lab.CustIface, l.ISPAddr(u.Name), lab.WANIface, i)
	}
	var hosts []string
	for _, h := range lab.InetHosts {
		hosts = append(hosts, h.String())
	}
	w("inet    %-24s hosts %s", l.Inet, strings.Join(hosts, " "))
	w("lan     %-24s client %s %s/24, default via %s", l.LAN, lab.ClientIface, lab.LANClientAddr, lab.LANRouterAddr)
	w("")
	w("daemon: %s run --config %s", bin, cfg)
	w("")
	w("Poke it (from another terminal):")
	w("  ip netns exec %s ip rule", l.Router)
	w("  ip netns exec %s ip route show table all", l.Router)
	w("  ip netns exec %s nft list ruleset", l.Router)
	w("  ip netns exec %s ping 192.0.2.1                # LAN client through the router", l.LAN)
	if len(l.ISPs) > 0 {
		u := l.Uplinks()[0]
		w("  ip netns exec %s ip link set %s down          # %s loses carrier (up again: ... up)", l.ISPs[0], lab.CustIface, u.Name)
		w("  ip netns exec %s tcpdump -ni %s                 # needs tcpdump (apt-get install tcpdump)", l.Router, u.Name)
	}
	w("  %s status --socket /run/uplinkd-lab/uplinkd.sock   # the daemon's view (contrib/lab.toml's control_socket)", bin)
	w("  ip netns exec %s bash                          # a shell in the router (killed when the lab goes)", l.Router)
	if demo {
		w("")
		w("-demo: one event every %v (redial, carrier loss, carrier back)", every)
	}
	w("Ctrl-C stops uplinkd and removes every namespace.")
	w("")
	fmt.Fprint(os.Stdout, b.String())
}

// demo cycles through events that exercise the daemon's reactions.
type demo struct {
	l       *lab.Lab
	redial  string // uplink that redials (the second one, like ppp1)
	carrier string // uplink that loses carrier (the first one, like ppp0)
	n       int
}

func newDemo(l *lab.Lab, spec lab.Spec) *demo {
	d := &demo{l: l}
	if len(spec.Uplinks) > 0 {
		d.carrier, d.redial = spec.Uplinks[0].Name, spec.Uplinks[0].Name
	}
	if len(spec.Uplinks) > 1 {
		d.redial = spec.Uplinks[1].Name
	}
	return d
}

func (d *demo) step() string {
	defer func() { d.n++ }()
	switch d.n % 3 {
	case 0:
		res, err := d.l.Redial(d.redial)
		if err != nil {
			return fmt.Sprintf("redial %s failed: %v", d.redial, err)
		}
		return fmt.Sprintf("redialed %s: %s -> %s", d.redial, res.Old, res.New)
	case 1:
		if _, err := d.l.SetCarrier(d.carrier, false); err != nil {
			return fmt.Sprintf("dropping carrier of %s failed: %v", d.carrier, err)
		}
		return fmt.Sprintf("dropped carrier of %s (its ISP end went down)", d.carrier)
	default:
		if _, err := d.l.SetCarrier(d.carrier, true); err != nil {
			return fmt.Sprintf("restoring carrier of %s failed: %v", d.carrier, err)
		}
		return fmt.Sprintf("restored carrier of %s", d.carrier)
	}
}
