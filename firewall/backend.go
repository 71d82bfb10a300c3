package firewall

import (
	"errors"
	"log/slog"
	"os/exec"
	"strings"

	"github.com/uplinkd/uplinkd/policy"
)

// Backend makes the kernel hold a Ruleset. Methods are safe for concurrent
// use; a Backend is meant to live as long as the daemon.
type Backend interface {
	// Sync makes the kernel match rs in one atomic batch. It writes nothing
	// (changed == false) when rs renders to what the last successful Sync
	// wrote and no Check has since found the kernel state damaged.
	Sync(rs Ruleset) (changed bool, err error)
	// Flush removes everything uplinkd owns (the table, or the UPLINKD-*
	// chains and their jumps) and nothing else.
	Flush() error
	// Plan returns the text Sync would load: `nft -f` input for nftables,
	// iptables-restore input (one *table section each) for iptables.
	Plan(rs Ruleset) string
	// Check reports whether the owned state is still present and equal to
	// the last Sync. It is cheap enough to call every second. When it
	// reports false, the next Sync rewrites everything.
	Check() (intact bool, err error)
	// DeleteConntrackByMark deletes, inside the kernel, the conntrack
	// entries whose mark satisfies (ct mark & mask) == mark, and returns how
	// many went. mask must not be 0.
	DeleteConntrackByMark(mark, mask uint32) (int, error)
	// TrafficReader reads the per-uplink traffic counters (traffic.go).
	TrafficReader
	// The event path's capabilities, which both backends have: the
	// conntrack deletes without the count, IPv6 alone, and the cheap
	// "would Sync change anything" (see each interface).
	ConntrackClearer
	ConntrackClearer6
	InSyncer
	// Close releases the backend's sockets; kernel state is left in place so
	// a restarted daemon adopts it.
	Close() error
}

// New returns the backend the configuration names: "nftables" (the default)
// or "iptables", which drives whichever iptables variant `iptables` is on
// this host (legacy on the hosts this backend exists for; the nf_tables
// variant otherwise, so the rules show up where the administrator looks).
func New(backend string, netnsFd int, log *slog.Logger) (Backend, error) {
	if backend == "iptables" {
		return NewIPTables(netnsFd, log, !iptablesIsNFT())
	}
	return NewNFTables(netnsFd, log)
}

// FromConfig returns the backend [firewall] names, honouring
// iptables_variant for the iptables backend.
func FromConfig(f policy.Firewall, netnsFd int, log *slog.Logger) (Backend, error) {
	if f.Backend == policy.BackendIPTables && (f.IPTablesVariant == policy.IPTablesLegacy || f.IPTablesVariant == policy.IPTablesNFT) {
		return NewIPTables(netnsFd, log, f.IPTablesVariant == policy.IPTablesLegacy)
	}
	return New(string(f.Backend), netnsFd, log)
}

// iptablesIsNFT reports whether `iptables` is the nf_tables variant
// ("iptables v1.8.9 (nf_tables)").
func iptablesIsNFT() bool {
	out, err := exec.Command("iptables", "--version").Output()
	return err == nil && strings.Contains(string(out), "nf_tables")
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

var errClosed = errors.New("firewall backend closed")

// ConntrackClearer is implemented by both backends: DeleteConntrackByMark
// without the count, which costs two more round trips. The event path uses
// it, since a redial waits for the delete.
type ConntrackClearer interface {
	ClearConntrackByMark(mark, mask uint32) error
}

// ConntrackClearer6 is a backend that can delete only the IPv6 conntrack
// entries of an uplink (its IPv6 side failed or renumbered while its IPv4
// side works); both backends are.
type ConntrackClearer6 interface {
	ClearConntrack6ByMark(mark, mask uint32) error
}

// InSyncer is implemented by both backends: it tells, without building
// anything, that Sync(rs) would change nothing. The nftables backend
// compares rs with the Ruleset it last applied; the iptables backend cannot
// tell without reading the kernel and always answers false. The loop runs
// the routing writes and a firewall sync that has work side by side, and
// one that has none inline.
type InSyncer interface {
	InSync(rs Ruleset) bool
}

var (
	_ ConntrackClearer  = (*nftBackend)(nil)
	_ ConntrackClearer  = (*iptBackend)(nil)
	_ ConntrackClearer6 = (*nftBackend)(nil)
	_ ConntrackClearer6 = (*iptBackend)(nil)
	_ InSyncer          = (*nftBackend)(nil)
	_ InSyncer          = (*iptBackend)(nil)
)
