package probe

import (
	"github.com/vishvananda/netns"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// inNetNS runs fn inside the network namespace nsfd (0: the current one, fn
// runs directly). Only the creation of sockets needs this: a socket belongs
// to the namespace it was created in for its whole life, so it can be used
// from any goroutine afterwards. netnsx.Do never returns a thread to the
// scheduler in the wrong namespace.
func inNetNS(nsfd int, fn func() error) error {
	if nsfd == 0 {
		return fn()
	}
	return netnsx.Do(netns.NsHandle(nsfd), fn)
}
