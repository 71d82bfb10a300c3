package firewall

import (
	"github.com/vishvananda/netns"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// nsRunner runs functions inside the backend's network namespace. Commands
// started from within (iptables-restore, and the iptables commands
// go-iptables runs) inherit its namespace: Go forks from the calling thread,
// which netnsx.Do has switched for the duration of the call.
type nsRunner struct {
	ns netns.NsHandle
}

// newNSRunner returns nil (run in place) when netnsFd <= 0.
func newNSRunner(netnsFd int) (*nsRunner, error) {
	if netnsFd <= 0 {
		return nil, nil
	}
	return &nsRunner{ns: netns.NsHandle(netnsFd)}, nil
}

func (r *nsRunner) do(f func() error) error {
	if r == nil {
		return f()
	}
	return netnsx.Do(r.ns, f)
}

// close is kept for the backend's lifecycle: the runner holds nothing (the
// namespace fd belongs to the caller).
func (r *nsRunner) close() {}
