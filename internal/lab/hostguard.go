package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// The host guard exists because a lab bug (a missing namespace argument, a
// veth created through the wrong socket) would silently reconfigure the
// machine the tests run on. Snapshotting the host's routing and firewall
// state around a test binary turns such a bug into a loud failure.

var (
	// Counters and timers change on their own and would make every
	// comparison fail; they say nothing about configuration.
	iptCounters = regexp.MustCompile(`\[\d+:\d+\]`)
	nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	expiresRe   = regexp.MustCompile(`\s+expires \S+`)
)

type hostSection struct {
	title  string
	argv   []string
	filter func(string) string
}

func hostSections() []hostSection {
	secs := []hostSection{
		{"ip -4 rule", []string{"ip", "-4", "rule"}, nil},
		{"ip -6 rule", []string{"ip", "-6", "rule"}, nil},
		{"ip route show table all", []string{"ip", "route", "show", "table", "all"}, stripExpires},
		{"ip link (names)", []string{"ip", "-o", "link", "show"}, linkNames},
	}
	if _, err := exec.LookPath("iptables-save"); err == nil {
		secs = append(secs, hostSection{"iptables-save", []string{"iptables-save"}, iptablesFilter})
	}
	if _, err := exec.LookPath("nft"); err == nil {
		secs = append(secs, hostSection{"nft list ruleset", []string{"nft", "list", "ruleset"}, nftFilter})
	}
	return secs
}

// HostState returns a textual snapshot of the host namespace's policy rules,
// routes (all tables), link names, iptables and nftables rulesets, with
// counters removed. It only reads. A command that fails contributes its error
// text (so the snapshot still compares) and is also reported in the error.
func HostState() (string, error) {
	var b strings.Builder
	var errs []error
	for _, s := range hostSections() {
		fmt.Fprintf(&b, "## %s\n", s.title)
		out, err := exec.Command(s.argv[0], s.argv[1:]...).CombinedOutput()
		text := string(out)
		if err != nil {
			errs = append(errs, fmt.Errorf("lab: host state: %s: %w: %s", strings.Join(s.argv, " "), err, strings.TrimSpace(text)))
			text = "error: " + err.Error() + "\n" + text
		} else if s.filter != nil {
			text = s.filter(text)
		}
		b.WriteString(text)
		if text != "" && !strings.HasSuffix(text, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String(), errors.Join(errs...)
}

func stripExpires(s string) string { return expiresRe.ReplaceAllString(s, "") }

// linkNames keeps only interface names: state, counters and flags of host
// links change legitimately (carrier, statistics) and are not ours to watch.
func linkNames(s string) string {
	var names []string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		if i := strings.IndexByte(name, '@'); i >= 0 {
			name = name[:i]
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, "\n") + "\n"
}

func iptablesFilter(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		out = append(out, iptCounters.ReplaceAllString(line, ""))
	}
	return strings.Join(out, "\n") + "\n"
}

func nftFilter(s string) string {
	return expiresRe.ReplaceAllString(nftCounters.ReplaceAllString(s, "counter"), "")
}

// GuardMain is a TestMain for packages that use the lab:
//
//	func TestMain(m *testing.M) { os.Exit(lab.GuardMain(m)) }
//
// It sweeps namespaces left by dead runs, snapshots HostState, runs the
// tests, closes labs the tests leaked (a failure), and compares the host state
// again: any difference is printed and fails the run. SIGINT/SIGTERM during
// the run close every open lab before exiting.
//
// Run by a user other than root, it only runs the tests: such a process
// cannot create namespaces or change the host's routes, rules or firewall
// (the lab tests skip themselves), and it could not read the firewall
// state to compare anyway. It also starts no process then: the arm tests
// of `make cross-test` run as nobody under Debian 12's qemu-user 7.2, where
// os/exec can hang in waitid on a child that has exited (golang/go#69259),
// and a CI run hung 22 minutes in the snapshot after watcher/probe's PASS.
func GuardMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	if removed, err := SweepStale(); err != nil {
		fmt.Fprintf(os.Stderr, "lab: sweeping stale namespaces: %v\n", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "lab: removed %d stale namespaces of dead runs: %s\n", len(removed), strings.Join(removed, " "))
	}
	before, err := HostState()
	if err != nil {
		// Still compared: the same failure before and after is no change.
		fmt.Fprintf(os.Stderr, "lab: warning: %v\n", err)
	}

	stop := CleanupOnSignal(func(sig os.Signal) {
		fmt.Fprintf(os.Stderr, "lab: %v: removing lab namespaces\n", sig)
		os.Exit(1)
	})
	code := m.Run()
	stop()

	if n := openLabs(); n > 0 {
		fmt.Fprintf(os.Stderr, "lab: FAIL: %d lab(s) left open by tests (missing Close or NewT)\n", n)
		if err := CloseAll(); err != nil {
			fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		}
		code = 1
	}
	if left := ownNamespaces(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "lab: FAIL: namespaces left behind: %s\n", strings.Join(left, " "))
		for _, n := range left {
			_ = killInNamespaces([]string{n})
			if err := deleteNS(n); err != nil {
				fmt.Fprintf(os.Stderr, "lab: %v\n", err)
			}
		}
		code = 1
	}

	after, _ := HostState()
	if before != after {
		fmt.Fprintf(os.Stderr, "lab: FAIL: the host network namespace changed during the tests:\n%s", Diff(before, after))
		return 1
	}
	return code
}

// ownNamespaces lists lab namespaces created by this process.
func ownNamespaces() []string {
	all, _ := listLabNamespaces()
	var out []string
	for name, pid := range all {
		if pid == os.Getpid() {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// CleanupOnSignal closes every open lab when SIGINT or SIGTERM arrives and
// then calls then (which normally exits). The returned function stops
// watching for signals.
func CleanupOnSignal(then func(os.Signal)) (stop func()) {
	ch := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-ch:
			if err := CloseAll(); err != nil {
				fmt.Fprintf(os.Stderr, "lab: %v\n", err)
			}
			then(sig)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// Diff returns a line diff of a and b: changed lines prefixed with - and +,
// with up to 2 lines of context, and "@@" between distant hunks.
func Diff(a, b string) string {
	al := strings.Split(strings.TrimSuffix(a, "\n"), "\n")
	bl := strings.Split(strings.TrimSuffix(b, "\n"), "\n")
	n, m := len(al), len(bl)
	if n*m > 25_000_000 {
		return "--- before\n" + a + "+++ after\n" + b
	}
	// lcs[i][j] = length of the LCS of al[i:] and bl[j:].
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		kind byte
		text string
	}
	var ops []op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && al[i] == bl[j]:
			ops = append(ops, op{' ', al[i]})
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			// Deletions first, so a changed line reads "- old" then "+ new".
			ops = append(ops, op{'-', al[i]})
			i++
		default:
			ops = append(ops, op{'+', bl[j]})
			j++
		}
	}
	const ctx = 2
	var out strings.Builder
	lastPrinted := -1
	for k, o := range ops {
		if o.kind == ' ' {
			continue
		}
		start := max(k-ctx, lastPrinted+1)
		if lastPrinted >= 0 && start > lastPrinted+1 {
			out.WriteString("@@\n")
		}
		for c := start; c < k; c++ {
			fmt.Fprintf(&out, "  %s\n", ops[c].text)
		}
		fmt.Fprintf(&out, "%c %s\n", o.kind, o.text)
		lastPrinted = k
		// Trailing context is printed lazily by the next change or below.
		end := min(k+ctx, len(ops)-1)
		next := k + 1
		for next <= end && ops[next].kind == ' ' {
			next++
		}
		if next > end { // no change within context distance: print context now
			for c := k + 1; c <= end; c++ {
				fmt.Fprintf(&out, "  %s\n", ops[c].text)
			}
			lastPrinted = end
		}
	}
	return out.String()
}
