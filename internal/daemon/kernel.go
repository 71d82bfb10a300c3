package daemon

import (
	"context"
	"net/netip"

	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// Kernel is what the loop needs of the kernel: a snapshot of the state it
// decides on, the application of a diff, and the events that say when to
// look again. *kernel.Kernel (an in-memory mirror kept current by the
// netlink notifications it also delivers as events) is the real one.
type Kernel interface {
	Snapshot() (policy.Observed, error)
	ReadSysctls(keys []string) (map[string]string, error)
	Apply(changes []policy.Change, obs policy.Observed) error
	// ForgetNeighbor deletes the neighbour entry of ip on dev, so a gateway
	// that comes back is resolved afresh instead of through a stale entry.
	ForgetNeighbor(dev string, ip netip.Addr, obs policy.Observed) error
	// SetTables names the uplinks' routing tables (the mirror keeps their
	// routes in full); Resync makes the next Snapshot re-read everything.
	SetTables(tables []int)
	Resync()
	// Run sends the kernel's change events until ctx is done.
	Run(ctx context.Context, out chan<- watcher.Event) error
	Close() error
}

// uplinkTables lists the routing tables of the configured uplinks.
func uplinkTables(cfg *policy.Config) []int {
	out := make([]int, 0, len(cfg.Uplinks))
	for _, u := range cfg.Uplinks {
		out = append(out, u.TableID)
	}
	return out
}
