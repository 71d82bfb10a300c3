package firewall

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// iptBackend owns the UPLINKD-* chains and their jumps.
type iptBackend struct {
	mu      sync.Mutex
	log     *slog.Logger
	legacy  bool
	cmd     string // iptables or iptables-legacy
	restore string // iptables-restore or iptables-legacy-restore
	save    string
	netnsFd int // the backend's namespace; netnsx.IsOwn: the caller's own
	ipt     *iptables.IPTables
	nf      *nfConn

	// applied is the restore text per table of the last successful Sync;
	// missing means unknown (rewrite on the next Sync).
	applied map[string]string
	// want is the chains per table of the last Sync, known what exists in
	// the kernel (found at adoption), so stale chains get deleted.
	want, known map[string][]string
	// jumpsOK: the jumps were verified or inserted since the last damage.
	jumpsOK bool
	// carry keeps the dual-stack traffic counts monotonic (traffic.go).
	carry6 dualCarry
	// extraJumps are duplicates of our jumps found at adoption (a crashed
	// run, or a hand-added copy); they are ours to remove.
	extraJumps map[iptJump]int
	// snapshot is iptables-save's rendering of our chains right after the
	// last Sync (taken by the first Check), to detect modified rules.
	snapshot map[string][]string
	counts   map[string]int
	// closed: Close ran; the netfilter sockets are gone.
	closed bool

	// ip6Applied is the ip6tables-restore text of the IPv6 chains the
	// last sync wrote ("" none), valid while ip6Known (iptnpt6.go), with
	// each chain's rule count and the jumps, for Check.
	ip6Applied string
	ip6Known   bool
	ip6Counts  map[string]int
	ip6Jumps   []iptJump
}

const execTimeout = 30 * time.Second

// NewIPTables returns the iptables backend working in the network namespace
// netnsFd refers to (netnsx.IsOwn, <= 0: the current one). legacy selects
// iptables-legacy(-restore/-save) instead of the iptables found on PATH.
func NewIPTables(netnsFd int, log *slog.Logger, legacy bool) (Backend, error) {
	b := &iptBackend{log: orDiscard(log), legacy: legacy, restore: "iptables-restore", save: "iptables-save"}
	b.cmd = "iptables"
	if legacy {
		b.cmd, b.restore, b.save = "iptables-legacy", "iptables-legacy-restore", "iptables-legacy-save"
	}
	b.netnsFd = netnsFd
	// go-iptables runs `iptables --version` here, so it is created on the
	// namespace thread like every later call.
	err := b.do(func() (err error) {
		b.ipt, err = iptables.New(iptables.Path(b.cmd), iptables.Timeout(5))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("iptables backend: %s: %w", b.cmd, err)
	}
	if b.nf, err = dialNF(netnsFd); err != nil {
		return nil, fmt.Errorf("iptables backend: %w", err)
	}
	b.reset()
	return b, nil
}

// do runs f inside the backend's network namespace (netnsx.Do; in place
// for the caller's own). Commands started from within (iptables-restore,
// and the iptables commands go-iptables runs) inherit its namespace: Go
// forks from the calling thread, which netnsx.Do has switched for the
// duration of the call.
func (b *iptBackend) do(f func() error) error { return netnsx.Do(b.netnsFd, f) }

// reset forgets what we believe the kernel holds: the next Sync re-reads it
// and rewrites everything.
func (b *iptBackend) reset() {
	b.applied, b.want, b.known = map[string]string{}, nil, nil
	b.jumpsOK, b.snapshot, b.counts, b.extraJumps = false, nil, nil, nil
	b.ip6Known = false
}

// Plan renders all three tables. Sync sends only the tables whose text
// changed since the last Sync, plus `-X` lines for UPLINKD-* chains that are
// no longer wanted.
func (b *iptBackend) Plan(rs Ruleset) string {
	text := buildIPT(rs).text()
	if ip6, _ := ip6Program(rs); ip6 != "" {
		text += "# ip6tables\n" + ip6
	}
	return text
}

// exec runs a command in the backend's namespace with stdin.
func (b *iptBackend) exec(stdin string, name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := b.do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		cmd.Stdout, cmd.Stderr = &out, &errb
		return cmd.Run()
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// saved is iptables-save output reduced to what matters to us.
type saved struct {
	chains map[string][]string // table -> all chain names
	rules  map[string][]string // "table/chain" -> rule args, in order
}

func (b *iptBackend) readSave() (*saved, error) {
	out, err := b.exec("", b.save)
	if err != nil {
		return nil, err
	}
	s := &saved{chains: map[string][]string{}, rules: map[string][]string{}}
	table := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			s.chains[table] = append(s.chains[table], name)
		case strings.HasPrefix(line, "-A "):
			chain, args, _ := strings.Cut(line[3:], " ")
			s.rules[table+"/"+chain] = append(s.rules[table+"/"+chain], args)
		}
	}
	return s, sc.Err()
}

func ours(chains []string) []string {
	var out []string
	for _, c := range chains {
		if strings.HasPrefix(c, ChainPrefix) {
			out = append(out, c)
		}
	}
	return out
}

func (s *saved) jumpCount(j iptJump) int {
	n := 0
	for _, r := range s.rules[j.table+"/"+j.chain] {
		if r == "-j "+j.target {
			n++
		}
	}
	return n
}

func (b *iptBackend) Sync(rs Ruleset) (bool, error) {
	prog := buildIPT(rs)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false, errClosed
	}
	start := time.Now()
	if b.known == nil {
		// First Sync (or after damage): adopt what is there, so chains a
		// previous run left behind are rewritten or deleted, never doubled.
		s, err := b.readSave()
		if err != nil {
			return false, fmt.Errorf("iptables sync: read current rules: %w", err)
		}
		b.known = map[string][]string{}
		for _, t := range iptTables {
			b.known[t] = ours(s.chains[t])
		}
		b.extraJumps = map[iptJump]int{}
		for _, j := range iptJumps {
			if n := s.jumpCount(j); n > 1 {
				b.extraJumps[j] = n - 1
			}
		}
	}
	var input strings.Builder
	var changed []string
	for _, t := range iptTables {
		tbl := prog.tables[t]
		text := tbl.text(nil)
		if b.applied[t] == text {
			continue
		}
		var stale []string
		for _, c := range b.known[t] {
			if !slices.Contains(tbl.chains, c) {
				stale = append(stale, c)
			}
		}
		input.WriteString(tbl.text(stale))
		changed = append(changed, t)
	}
	ip6Changed, err := b.syncIP6(rs)
	if err != nil {
		b.reset()
		return false, err
	}
	if len(changed) == 0 && b.jumpsOK {
		return ip6Changed, nil
	}
	if len(changed) > 0 {
		b.snapshot, b.counts = nil, nil
		// One exec for every changed table; each table commits atomically.
		if _, err := b.exec(input.String(), b.restore, "--noflush", "-w", "5"); err != nil {
			b.reset()
			return false, fmt.Errorf("iptables sync: %w", err)
		}
		for _, t := range changed {
			b.applied[t] = prog.tables[t].text(nil)
			b.known[t] = slices.Clone(prog.tables[t].chains)
		}
	}
	if !b.jumpsOK {
		if err := b.ensureJumps(); err != nil {
			b.reset()
			return false, fmt.Errorf("iptables sync: %w", err)
		}
		b.jumpsOK = true
	}
	b.want = map[string][]string{}
	b.counts = map[string]int{}
	for _, t := range iptTables {
		b.want[t] = prog.tables[t].chains
		for chain, rules := range prog.tables[t].rules {
			b.counts[t+"/"+chain] = len(rules)
		}
	}
	b.log.Debug("iptables sync", "event", "apply", "tables", changed, "duration", time.Since(start))
	return true, nil
}

// ensureJumps checks each jump with go-iptables and inserts it at the top of
// the built-in chain only when missing; a duplicate (ours) is removed.
func (b *iptBackend) ensureJumps() error {
	return b.do(func() error {
		for _, j := range iptJumps {
			ok, err := b.ipt.Exists(j.table, j.chain, j.rulespec()...)
			if err != nil {
				return fmt.Errorf("check jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
			}
			if !ok {
				if err := b.ipt.Insert(j.table, j.chain, 1, j.rulespec()...); err != nil {
					return fmt.Errorf("insert jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
				}
			}
			for range b.extraJumps[j] {
				if err := b.ipt.Delete(j.table, j.chain, j.rulespec()...); err != nil {
					return fmt.Errorf("delete duplicate jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
				}
			}
		}
		b.extraJumps = nil
		return nil
	})
}

func (b *iptBackend) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	b.reset()
	s, err := b.readSave()
	if err != nil {
		return fmt.Errorf("iptables flush: read current rules: %w", err)
	}
	err = b.do(func() error {
		for _, j := range iptJumps {
			for range s.jumpCount(j) {
				if err := b.ipt.Delete(j.table, j.chain, j.rulespec()...); err != nil {
					return fmt.Errorf("delete jump %s/%s -> %s: %w", j.table, j.chain, j.target, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("iptables flush: %w", err)
	}
	var input strings.Builder
	for _, t := range iptTables {
		if chains := ours(s.chains[t]); len(chains) > 0 {
			input.WriteString((&iptTable{name: t}).text(chains))
		}
	}
	if input.Len() > 0 {
		if _, err := b.exec(input.String(), b.restore, "--noflush", "-w", "5"); err != nil {
			return fmt.Errorf("iptables flush: %w", err)
		}
	}
	// The IPv6 chains of a run with IPv6 state; without a working
	// ip6tables there are none.
	if seen, err := b.readIP6(); err == nil {
		if err := b.removeIP6(seen); err != nil {
			return fmt.Errorf("iptables flush: %w", err)
		}
	}
	return nil
}

// Check reads the rules once (iptables-save) and compares our chains and
// jumps with the last Sync.
func (b *iptBackend) Check() (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false, errClosed
	}
	if b.want == nil {
		return false, nil
	}
	s, err := b.readSave()
	if err != nil {
		return false, fmt.Errorf("iptables check: %w", err)
	}
	why := b.compare(s)
	if why == "" {
		if why, err = b.checkIP6(); err != nil {
			return false, err
		}
	}
	if why != "" {
		b.log.Info("iptables chains damaged", "reason", why)
		b.reset()
		return false, nil
	}
	return true, nil
}

func (b *iptBackend) compare(s *saved) string {
	for _, j := range iptJumps {
		if s.jumpCount(j) == 0 {
			return fmt.Sprintf("jump %s/%s -> %s missing", j.table, j.chain, j.target)
		}
	}
	current := map[string][]string{}
	for _, t := range iptTables {
		for _, c := range b.want[t] {
			if !slices.Contains(s.chains[t], c) {
				return fmt.Sprintf("chain %s/%s missing", t, c)
			}
			current[t+"/"+c] = s.rules[t+"/"+c]
		}
	}
	if b.snapshot == nil {
		// First look after a Sync: iptables-save normalizes rules, so the
		// rule count is what can be compared with what we wrote; the
		// normalized text becomes the reference for later Checks.
		for k, rules := range current {
			if len(rules) != b.counts[k] {
				return fmt.Sprintf("chain %s has %d rules, want %d", k, len(rules), b.counts[k])
			}
		}
		b.snapshot = current
		return ""
	}
	for _, k := range slices.Sorted(maps.Keys(b.snapshot)) {
		if !slices.Equal(current[k], b.snapshot[k]) {
			return "rules of chain " + k + " changed"
		}
	}
	return ""
}

// InSync is false: whether Sync(rs) would write anything is known only by
// reading iptables-save, which Sync does anyway.
func (b *iptBackend) InSync(Ruleset) bool { return false }

// ClearConntrackByMark is DeleteConntrackByMark in one request, without
// the count.
func (b *iptBackend) ClearConntrackByMark(mark, mask uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	return b.nf.clearConntrackByMark(mark, mask)
}

// ClearConntrack6ByMark deletes the IPv6 conntrack entries with the mark.
func (b *iptBackend) ClearConntrack6ByMark(mark, mask uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	return b.nf.clearConntrackByMarkFamily(mark, mask, unix.AF_INET6)
}

func (b *iptBackend) DeleteConntrackByMark(mark, mask uint32) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errClosed
	}
	return b.nf.deleteConntrackByMark(mark, mask)
}

func (b *iptBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.nf.Close()
	if err != nil {
		return fmt.Errorf("iptables backend close: %w", err)
	}
	return nil
}
