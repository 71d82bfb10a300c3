package firewall

import (
	"fmt"
	"strings"
)

// The iptables backend's NPTv6 (npt6.go): ip6tables SNPT and DNPT targets
// (RFC 6296, stateless and checksum-neutral) in the mangle table, in two
// chains of its own with a jump each. ip6tables is run only when a
// mapping exists or to find and remove what an earlier run left, so an
// IPv4-only box sees no ip6tables write.

// ip6Commands are the ip6tables binaries of the backend's variant.
func (b *iptBackend) ip6Commands() (cmd, restore, save string) {
	if b.legacy {
		return "ip6tables-legacy", "ip6tables-legacy-restore", "ip6tables-legacy-save"
	}
	return "ip6tables", "ip6tables-restore", "ip6tables-save"
}

// npt6Seen is what ip6tables-save shows of the NPTv6 chains.
type npt6Seen struct {
	chains map[string]bool
	rules  map[string]int // per chain
	jumps  map[string]int // per target
}

func (b *iptBackend) readNPT6() (npt6Seen, error) {
	_, _, save := b.ip6Commands()
	// Without -t: the save lists the tables that exist and creates none
	// (-t mangle would load ip6table_mangle on a legacy box).
	out, err := b.exec("", save)
	seen := npt6Seen{chains: map[string]bool{}, rules: map[string]int{}, jumps: map[string]int{}}
	if err != nil {
		return seen, err
	}
	mangle := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "*") {
			mangle = line == "*mangle"
		}
		if !mangle {
			continue
		}
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && (f[0] == ":"+iptNPT6Post || f[0] == ":"+iptNPT6Pre):
			seen.chains[f[0][1:]] = true
		case len(f) >= 2 && f[0] == "-A" && (f[1] == iptNPT6Post || f[1] == iptNPT6Pre):
			seen.rules[f[1]]++
		case len(f) == 4 && f[0] == "-A" && f[2] == "-j" && (f[3] == iptNPT6Post || f[3] == iptNPT6Pre):
			seen.jumps[f[3]]++
		}
	}
	return seen, nil
}

// syncNPT6 makes the NPTv6 chains hold maps (b.mu held). A mapping-free
// state that is not known is found out first: the chains of an earlier
// run are removed; without a working ip6tables there is nothing of ours.
func (b *iptBackend) syncNPT6(maps []NPT6) (bool, error) {
	text := iptNPT6Text(maps)
	if b.npt6Known && b.npt6Applied == text {
		return false, nil
	}
	cmd, restore, _ := b.ip6Commands()
	if text == "" {
		seen, err := b.readNPT6()
		if err != nil {
			if !b.npt6Known {
				b.npt6Known = true
				return false, nil
			}
			return false, fmt.Errorf("ip6tables: %w", err)
		}
		if err := b.removeNPT6(seen); err != nil {
			return false, err
		}
		b.npt6Applied, b.npt6Known = "", true
		return len(seen.chains) > 0, nil
	}
	if _, err := b.exec(text, restore, "--noflush", "-w", "5"); err != nil {
		b.npt6Known = false
		return false, fmt.Errorf("ip6tables sync: %w", err)
	}
	for _, j := range iptNPT6Jumps {
		if _, err := b.exec("", cmd, "-w", "5", "-t", j.table, "-C", j.chain, "-j", j.target); err == nil {
			continue
		}
		if _, err := b.exec("", cmd, "-w", "5", "-t", j.table, "-I", j.chain, "1", "-j", j.target); err != nil {
			b.npt6Known = false
			return false, fmt.Errorf("ip6tables sync: insert jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
		}
	}
	b.npt6Applied, b.npt6Known = text, true
	return true, nil
}

// removeNPT6 deletes every jump to the NPTv6 chains and the chains.
func (b *iptBackend) removeNPT6(seen npt6Seen) error {
	cmd, restore, _ := b.ip6Commands()
	for _, j := range iptNPT6Jumps {
		for range seen.jumps[j.target] {
			if _, err := b.exec("", cmd, "-w", "5", "-t", j.table, "-D", j.chain, "-j", j.target); err != nil {
				return fmt.Errorf("ip6tables: delete jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
			}
		}
	}
	if len(seen.chains) == 0 {
		return nil
	}
	var in strings.Builder
	in.WriteString("*mangle\n")
	for c := range seen.chains {
		fmt.Fprintf(&in, ":%s - [0:0]\n", c)
	}
	for c := range seen.chains {
		fmt.Fprintf(&in, "-X %s\n", c)
	}
	in.WriteString("COMMIT\n")
	if _, err := b.exec(in.String(), restore, "--noflush", "-w", "5"); err != nil {
		return fmt.Errorf("ip6tables: delete the NPTv6 chains: %w", err)
	}
	return nil
}

// checkNPT6 compares the NPTv6 chains with the last sync: "" when intact
// (or when there are none to keep).
func (b *iptBackend) checkNPT6(maps int) (string, error) {
	if !b.npt6Known || b.npt6Applied == "" {
		return "", nil
	}
	seen, err := b.readNPT6()
	if err != nil {
		return "", fmt.Errorf("ip6tables check: %w", err)
	}
	for _, j := range iptNPT6Jumps {
		if seen.jumps[j.target] == 0 {
			return fmt.Sprintf("ip6tables jump %s/%s -> %s missing", j.table, j.chain, j.target), nil
		}
		if seen.rules[j.target] != maps {
			return fmt.Sprintf("ip6tables chain %s has %d rules, want %d", j.target, seen.rules[j.target], maps), nil
		}
	}
	return "", nil
}
