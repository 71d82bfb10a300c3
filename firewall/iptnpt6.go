package firewall

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The iptables backend's IPv6 state (npt6.go): NPTv6 with the ip6tables
// SNPT and DNPT targets (RFC 6296, stateless and checksum-neutral) in the
// mangle table, and the IPv6 input filter of the uplinks with ipv6 on in
// the filter table, with the IPv6 side of input_policy, forward_policy and
// the deny list (filter6.go: UPLINKD-IN6, UPLINKD-FWD6, UPLINKD-DENY6), in
// chains of its own (UPLINKD-*) with one jump each from the built-in
// chains. ip6tables is run only when there is IPv6
// state to keep, or to find and remove what an earlier run left, so an
// IPv4-only box sees no ip6tables write.

// ip6tables chains and their jumps.
const (
	iptMark6Pre  = ChainPrefix + "MARK6-PRE"
	iptMark6Post = ChainPrefix + "MARK6-POST"
	iptNPT6Post  = ChainPrefix + "NPT6-POST"
	iptNPT6Pre   = ChainPrefix + "NPT6-PRE"
	iptIn6       = ChainPrefix + "IN6"
	iptIn6Of     = ChainPrefix + "IN6-" // + interface
	iptFwd6      = ChainPrefix + "FWD6"
	iptDeny6     = ChainPrefix + "DENY6"
)

// ip6Jumps are the jumps rs needs.
func ip6Jumps(rs Ruleset) []iptJump {
	var out []iptJump
	if len(rs.Marks6) > 0 {
		out = append(out, iptJump{"mangle", "PREROUTING", iptMark6Pre}, iptJump{"mangle", "POSTROUTING", iptMark6Post},
			iptJump{"mangle", "PREROUTING", iptCountIn}, iptJump{"mangle", "POSTROUTING", iptCountOut}, iptJump{"mangle", "FORWARD", iptCountFwd})
	}
	if len(rs.NPT6) > 0 {
		out = append(out, iptJump{"mangle", "POSTROUTING", iptNPT6Post}, iptJump{"mangle", "PREROUTING", iptNPT6Pre})
	}
	if input6Wanted(rs) {
		out = append(out, iptJump{"filter", "INPUT", iptIn6})
	}
	if forward6Wanted(rs) {
		out = append(out, iptJump{"filter", "FORWARD", iptFwd6})
	}
	return out
}

// ip6Program is the ip6tables-restore input of rs's IPv6 state ("" none)
// and the rule count of each chain it declares.
func ip6Program(rs Ruleset) (string, map[string]int) {
	counts := map[string]int{}
	var b strings.Builder
	add := func(chain string, args ...string) {
		fmt.Fprintf(&b, "-A %s %s\n", chain, strings.Join(args, " "))
		counts[chain]++
	}
	if len(rs.Marks6)+len(rs.NPT6) > 0 {
		// Every chain is declared before the first rule.
		b.WriteString("*mangle\n")
		var chains []string
		if len(rs.Marks6) > 0 {
			chains = append(chains, iptMark6Pre, iptMark6Post, iptCountIn, iptCountOut, iptCountFwd)
		}
		if len(rs.NPT6) > 0 {
			chains = append(chains, iptNPT6Post, iptNPT6Pre)
		}
		for _, c := range chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
			counts[c] = 0
		}
		// Sticky balancing, as for IPv4 (mark6Chains has the why):
		// later LAN packets of a connection get its uplink's mark back.
		for _, dir := range []string{"ORIGINAL", "REPLY"} {
			for _, m := range rs.Marks6 {
				if rs.LANInterface == "" {
					break
				}
				add(iptMark6Pre, "-i", rs.LANInterface, "-m", "conntrack", "--ctdir", dir,
					"-m", "connmark", "--mark", hexMark(m.ConnMark)+"/"+hexMark(UplinkMarkMask),
					"-j", "MARK", "--set-xmark", hexMark(m.ConnMark)+"/"+hexMark(UplinkMarkMask))
			}
		}
		for _, m := range rs.Marks6 {
			set := []string{"-j", "CONNMARK", "--set-xmark", hexMark(m.ConnMark) + "/" + hexMark(UplinkMarkMask)}
			add(iptMark6Pre, append([]string{"-i", m.Iface, "-m", "conntrack", "--ctstate", "NEW"}, set...)...)
			add(iptMark6Post, append([]string{"-o", m.Iface, "-m", "conntrack", "--ctstate", "NEW"}, set...)...)
		}
		// The IPv6 traffic counters of the uplinks with ipv6 on, as
		// iptCountRules writes the IPv4 ones (ReadTraffic adds the two).
		for _, m := range rs.Marks6 {
			add(iptCountIn, "-i", m.Iface)
			add(iptCountOut, "-o", m.Iface)
			add(iptCountFwd, "-i", m.Iface)
			add(iptCountFwd, "-o", m.Iface)
		}
		for _, m := range rs.NPT6 {
			add(iptNPT6Post, "-o", m.Iface, "-s", m.Inside.String(), "-m", "comment", "--comment", `"npt6 `+m.Uplink+`"`,
				"-j", "SNPT", "--src-pfx", m.Inside.String(), "--dst-pfx", m.Outside.String())
		}
		for _, m := range rs.NPT6 {
			add(iptNPT6Pre, "-i", m.Iface, "-d", m.Outside.String(), "-m", "comment", "--comment", `"npt6 `+m.Uplink+`"`,
				"-j", "DNPT", "--src-pfx", m.Outside.String(), "--dst-pfx", m.Inside.String())
		}
		b.WriteString("COMMIT\n")
	}
	if input6Wanted(rs) || forward6Wanted(rs) {
		b.WriteString("*filter\n")
		// The rules are table ip6 uplinkd6's (policy6Chains), written
		// as the text has always had them: the deny chain first, and
		// each uplink's chain after its jump.
		chains, sets := policy6Chains(rs)
		w := newIPTWriter(chains, sets, map[string]iptChainRef{})
		order := [][2]string{{"input", iptIn6}, {"forward", iptFwd6}, {nftChainDeny, iptDeny6}}
		for _, f := range rs.Filters6 {
			order = append(order, [2]string{nftInChain(f.Iface), iptIn6Of + f.Iface})
		}
		for _, c := range order {
			if w.chains[c[0]] != nil {
				fmt.Fprintf(&b, ":%s - [0:0]\n", c[1])
				counts[c[1]], w.names[c[0]] = 0, iptChainRef{name: c[1]}
			}
		}
		w.nest = true
		if deny := w.chains[nftChainDeny]; deny != nil {
			w.chain(deny)
		}
		for _, c := range chains {
			w.chain(c)
		}
		for _, l := range w.lines {
			add(l.chain.name, l.text)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String(), counts
}

// ip6Commands are the ip6tables binaries of the backend's variant.
func (b *iptBackend) ip6Commands() (cmd, restore, save string) {
	if b.legacy {
		return "ip6tables-legacy", "ip6tables-legacy-restore", "ip6tables-legacy-save"
	}
	return "ip6tables", "ip6tables-restore", "ip6tables-save"
}

// ip6Seen is what ip6tables-save shows of uplinkd's IPv6 chains.
type ip6Seen struct {
	chains map[string]string // chain -> table
	rules  map[string]int    // per chain
	jumps  map[iptJump]int
}

func (b *iptBackend) readIP6() (ip6Seen, error) {
	_, _, save := b.ip6Commands()
	// Without -t: the save lists the tables that exist and creates none
	// (-t mangle would load ip6table_mangle on a legacy box).
	out, err := b.exec("", save)
	seen := ip6Seen{chains: map[string]string{}, rules: map[string]int{}, jumps: map[iptJump]int{}}
	if err != nil {
		return seen, err
	}
	table := ""
	for _, line := range strings.Split(out, "\n") {
		if t, ok := strings.CutPrefix(line, "*"); ok {
			table = t
			continue
		}
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && strings.HasPrefix(f[0], ":"+ChainPrefix):
			seen.chains[f[0][1:]] = table
		case len(f) >= 2 && f[0] == "-A" && strings.HasPrefix(f[1], ChainPrefix):
			seen.rules[f[1]]++
		case len(f) == 4 && f[0] == "-A" && f[2] == "-j" && strings.HasPrefix(f[3], ChainPrefix):
			seen.jumps[iptJump{table, f[1], f[3]}]++
		}
	}
	return seen, nil
}

// syncIP6 makes the IPv6 chains hold rs's (b.mu held): the new text
// first, then the jumps, then what is no longer wanted goes. An unknown
// state without anything to keep is found out first: an earlier run's
// chains are removed; without a working ip6tables there is nothing of
// ours.
func (b *iptBackend) syncIP6(rs Ruleset) (bool, error) {
	text, counts := ip6Program(rs)
	if b.ip6Known && b.ip6Applied == text {
		return false, nil
	}
	cmd, restore, _ := b.ip6Commands()
	if text != "" {
		if _, err := b.exec(text, restore, "--noflush", "-w", "5"); err != nil {
			b.ip6Known = false
			return false, fmt.Errorf("ip6tables sync: %w", err)
		}
	}
	seen, err := b.readIP6()
	if err != nil {
		if text == "" && !b.ip6Known {
			b.ip6Known = true
			return false, nil
		}
		b.ip6Known = false
		return false, fmt.Errorf("ip6tables sync: %w", err)
	}
	for _, j := range ip6Jumps(rs) {
		if seen.jumps[j] > 0 {
			continue
		}
		if _, err := b.exec("", cmd, "-w", "5", "-t", j.table, "-I", j.chain, "1", "-j", j.target); err != nil {
			b.ip6Known = false
			return false, fmt.Errorf("ip6tables sync: insert jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
		}
	}
	maps.DeleteFunc(seen.chains, func(c, _ string) bool { _, keep := counts[c]; return keep })
	changed := text != "" || len(seen.chains) > 0
	if err := b.removeIP6(seen); err != nil {
		b.ip6Known = false
		return false, err
	}
	b.ip6Applied, b.ip6Known, b.ip6Counts, b.ip6Jumps = text, true, counts, ip6Jumps(rs)
	return changed, nil
}

// removeIP6 deletes the chains of seen and every jump to them.
func (b *iptBackend) removeIP6(seen ip6Seen) error {
	if len(seen.chains) == 0 {
		return nil
	}
	cmd, restore, _ := b.ip6Commands()
	for _, j := range slices.SortedFunc(maps.Keys(seen.jumps), func(a, b iptJump) int { return strings.Compare(a.target, b.target) }) {
		if _, ours := seen.chains[j.target]; !ours || strings.HasPrefix(j.chain, ChainPrefix) {
			continue // a jump inside our own chains goes with them
		}
		for range seen.jumps[j] {
			if _, err := b.exec("", cmd, "-w", "5", "-t", j.table, "-D", j.chain, "-j", j.target); err != nil {
				return fmt.Errorf("ip6tables: delete jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
			}
		}
	}
	var in strings.Builder
	for _, table := range []string{"mangle", "filter"} {
		var chains []string
		for c, t := range seen.chains {
			if t == table {
				chains = append(chains, c)
			}
		}
		if len(chains) == 0 {
			continue
		}
		slices.Sort(chains)
		in.WriteString("*" + table + "\n")
		for _, c := range chains {
			fmt.Fprintf(&in, ":%s - [0:0]\n", c) // flushes it: no reference between ours is left
		}
		for _, c := range chains {
			fmt.Fprintf(&in, "-X %s\n", c)
		}
		in.WriteString("COMMIT\n")
	}
	if _, err := b.exec(in.String(), restore, "--noflush", "-w", "5"); err != nil {
		return fmt.Errorf("ip6tables: delete uplinkd's chains: %w", err)
	}
	return nil
}

// checkIP6 compares the IPv6 chains with the last sync: "" when intact
// (or when there are none to keep).
func (b *iptBackend) checkIP6() (string, error) {
	if !b.ip6Known || b.ip6Applied == "" {
		return "", nil
	}
	seen, err := b.readIP6()
	if err != nil {
		return "", fmt.Errorf("ip6tables check: %w", err)
	}
	for _, j := range b.ip6Jumps {
		if seen.jumps[j] == 0 {
			return fmt.Sprintf("ip6tables jump %s/%s -> %s missing", j.table, j.chain, j.target), nil
		}
	}
	for c, n := range b.ip6Counts {
		if _, ok := seen.chains[c]; !ok {
			return "ip6tables chain " + c + " missing", nil
		}
		if seen.rules[c] != n {
			return fmt.Sprintf("ip6tables chain %s has %d rules, want %d", c, seen.rules[c], n), nil
		}
	}
	return "", nil
}
