package daemon

import (
	"github.com/uplinkd/uplinkd/policy"
)

// setTables tells the kernel mirror which tables the config reads (it keeps
// their routes in full, and only the default routes of the others) and
// whether it reads IPv6 at all.
func setTables(k Kernel, cfg *policy.Config) {
	k.SetTables(cfg.Tables())
	k.SetIPv6(cfg.IPv6On())
}
