package lab

import (
	"fmt"
	"strings"
	"time"
)

// RateLimit puts a token bucket (tc tbf) on the ISP side of the named
// uplink, downstream (toward the customer): at most rate (tc syntax, e.g.
// "8mbit"), with a queue that holds latency worth of packets. A saturating
// download through it fills the queue, so every reply on the uplink waits
// up to latency behind it: the RTT rises, with the tail drops of a full
// queue as the only loss (bufferbloat). The lab kernel has sch_tbf, not
// sch_netem. rate "" removes the limit.
func (l *Lab) RateLimit(name, rate string, latency time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return err
	}
	if rate == "" {
		if out, err := execIn(u.isp.name, nil, "tc", "qdisc", "del", "dev", CustIface, "root"); err != nil &&
			!strings.Contains(out+err.Error(), "No such file") && !strings.Contains(out+err.Error(), "Cannot delete qdisc with handle of zero") {
			return fmt.Errorf("lab: removing the rate limit of %s: %w", name, err)
		}
		return nil
	}
	if _, err := execIn(u.isp.name, nil, "tc", "qdisc", "replace", "dev", CustIface, "root", "tbf",
		"rate", rate, "burst", "32kbit", "latency", fmt.Sprintf("%dms", latency.Milliseconds())); err != nil {
		return fmt.Errorf("lab: rate limit %s %s: %w", name, rate, err)
	}
	return nil
}
