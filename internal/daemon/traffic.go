package daemon

import (
	"slices"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/control"
)

// addTraffic fills the uplinks' traffic counters of a status snapshot
// (copying the shared slice) with a live read of the firewall's counters:
// they change with every packet, not with passes. A failed read leaves
// them out and is logged at debug level (the status still answers).
func (d *Daemon) addTraffic(st *control.Status) {
	ifaces := make([]string, 0, len(st.Uplinks))
	for _, u := range st.Uplinks {
		if u.Interface != "" {
			ifaces = append(ifaces, u.Interface)
		}
	}
	if len(ifaces) == 0 {
		return
	}
	tr, err := d.deps.Firewall.ReadTraffic(ifaces...)
	if err != nil {
		d.log.Debug("reading traffic counters failed", "event", "traffic", "reason", err.Error())
		return
	}
	st.Uplinks = slices.Clone(st.Uplinks)
	for i := range st.Uplinks {
		if t, ok := tr[st.Uplinks[i].Interface]; ok {
			st.Uplinks[i].Traffic = &control.Traffic{
				In: control.Count(t.In), Out: control.Count(t.Out),
				ForwardIn: control.Count(t.ForwardIn), ForwardOut: control.Count(t.ForwardOut),
			}
		}
	}
}

// trafficDir is one direction of a status Traffic (firewall.Directions).
func trafficDir(t *control.Traffic, dir string) control.Count {
	switch dir {
	case firewall.DirIn:
		return t.In
	case firewall.DirOut:
		return t.Out
	case firewall.DirForwardIn:
		return t.ForwardIn
	case firewall.DirForwardOut:
		return t.ForwardOut
	}
	return control.Count{}
}
