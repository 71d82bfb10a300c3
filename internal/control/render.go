package control

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// FormatStatus renders st as the table `uplinkd status` prints. It is a pure
// function of st and now (ages are relative to now), so its output can be
// golden-tested.
func FormatStatus(st Status, now time.Time) string {
	var b strings.Builder
	d := st.Daemon
	fmt.Fprintf(&b, "uplinkd %s, pid %d, running %s\n", orDash(d.Version), d.PID, age(d.Started, now))
	fmt.Fprintf(&b, "config %s, loaded %s ago\n", orDash(d.Config), age(d.ConfigLoaded, now))
	last := "never"
	if !d.LastPass.IsZero() {
		last = age(d.LastPass, now) + " ago"
	}
	fmt.Fprintf(&b, "passes %d (last %s), repairs %d\n", d.Passes, last, d.Repairs)
	if d.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", d.Error)
	}
	if len(d.DrainedUnknown) > 0 {
		fmt.Fprintf(&b, "drained but not configured (ignored): %s\n", strings.Join(d.DrainedUnknown, ", "))
	}
	if st.HA != nil {
		fmt.Fprintf(&b, "ha role %s", st.HA.Role)
		if !st.HA.Since.IsZero() {
			fmt.Fprintf(&b, " for %s", age(st.HA.Since, now))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	if len(st.Uplinks) == 0 {
		b.WriteString("no uplinks configured\n")
		return b.String()
	}

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPLINK\tIFACE\tSTATE\tADDRESS\tGATEWAY\tTABLE\tTIER\tWEIGHT\tDEFAULT\tLOSS\tRTT\tJITTER\tSINCE\tRECONN\tLAST EVENT\tWHY")
	for _, u := range st.Uplinks {
		addr, gw := "-", "-"
		if u.Address.IsValid() {
			addr = u.Address.String()
		}
		if u.Gateway.IsValid() {
			gw = u.Gateway.String()
		}
		def := "n"
		switch {
		case u.Default:
			def = "y"
		case u.Drained:
			def = "drained"
		}
		loss, rtt, jitter := "-", "-", "-"
		if u.Loss != nil {
			loss = strconv.FormatFloat(*u.Loss*100, 'f', 0, 64) + "%"
		}
		if u.RTTms != nil {
			rtt = strconv.FormatFloat(*u.RTTms, 'f', 1, 64) + "ms"
		}
		if u.JitterMs != nil {
			jitter = strconv.FormatFloat(*u.JitterMs, 'f', 1, 64) + "ms"
		}
		since := "-"
		if !u.Since.IsZero() {
			since = age(u.Since, now)
		}
		ev := "-"
		if u.LastEvent != nil {
			ev = u.LastEvent.Name + " " + age(u.LastEvent.At, now) + " ago"
		}
		state := string(u.State)
		if u.Degraded && u.State == StateUp {
			state = "degraded"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			u.Name, orDash(u.Interface), state, addr, gw, u.Table, u.Tier, u.Weight, def,
			loss, rtt, jitter, since, u.Reconnects, ev, orDash(u.Reason))
	}
	tw.Flush()
	formatIPv6(&b, st.Uplinks)
	formatLAN6(&b, st.LAN, now)
	formatReconnects(&b, st.Uplinks, now)
	formatTraffic(&b, st.Uplinks)
	formatServices(&b, st.Services, now)
	formatPublishers(&b, st.Publishers, now)
	formatDHCP(&b, st.DHCP, now)
	return b.String()
}

// formatTraffic renders the traffic counters: one line per uplink that
// has them.
func formatTraffic(b *strings.Builder, ups []Uplink) {
	first := true
	var tw *tabwriter.Writer
	for _, u := range ups {
		t := u.Traffic
		if t == nil {
			continue
		}
		if first {
			b.WriteString("\n")
			tw = tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TRAFFIC\tIN\tOUT\tFORWARDED IN\tFORWARDED OUT")
			first = false
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, countText(t.In), countText(t.Out), countText(t.ForwardIn), countText(t.ForwardOut))
	}
	if tw != nil {
		tw.Flush()
	}
}

// formatIPv6 renders one line per uplink with ipv6 on; nothing when none
// has it (an IPv4-only status reads as it always did).
func formatIPv6(b *strings.Builder, ups []Uplink) {
	first := true
	var tw *tabwriter.Writer
	for _, u := range ups {
		v := u.IPv6
		if v == nil {
			continue
		}
		if first {
			first = false
			b.WriteString("\n")
			tw = tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "IPV6\tSTATE\tADDRESS\tGATEWAY\tDEFAULT\tLOSS\tRTT\tWHY")
		}
		addr, gw, def, loss, rtt := "-", "-", "n", "-", "-"
		if v.Address.IsValid() {
			addr = v.Address.String()
		}
		if v.Gateway.IsValid() {
			gw = v.Gateway.String()
		}
		if v.Default {
			def = "y"
		}
		if v.Loss != nil {
			loss = strconv.FormatFloat(*v.Loss*100, 'f', 0, 64) + "%"
		}
		if v.RTTms != nil {
			rtt = strconv.FormatFloat(*v.RTTms, 'f', 1, 64) + "ms"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, v.State, addr, gw, def, loss, rtt, orDash(v.Reason))
	}
	if tw != nil {
		tw.Flush()
	}
}

// formatLAN6 renders [lan.ipv6] when its mode is not off (lan is absent
// then): the mode, the inside prefix of mode npt, and one line per uplink
// with ipv6 on with what it delegates. Lifetimes are time left; "-" when
// infinite or configured.
func formatLAN6(b *strings.Builder, lan *LAN, now time.Time) {
	if lan == nil || lan.IPv6 == nil {
		return
	}
	l := lan.IPv6
	fmt.Fprintf(b, "\nlan ipv6: mode %s", l.Mode)
	if l.Prefix.IsValid() {
		fmt.Fprintf(b, ", inside %s", l.Prefix)
	}
	b.WriteString("\n")
	if len(l.Uplinks) == 0 {
		return
	}
	left := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return age(now, t)
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LAN6\tDELEGATED\tSOURCE\tNPT\tPREFERRED\tVALID\tLEARNED\tFORMER")
	for _, u := range l.Uplinks {
		deleg, npt, learned, former := "-", "-", "-", "-"
		if u.Delegated.IsValid() {
			deleg = u.Delegated.String()
		}
		if u.NPT.IsValid() {
			npt = u.NPT.String()
		}
		if !u.Learned.IsZero() {
			learned = age(u.Learned, now) + " ago"
		}
		if len(u.Former) > 0 {
			fs := make([]string, len(u.Former))
			for i, f := range u.Former {
				fs[i] = f.String()
			}
			former = strings.Join(fs, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, deleg, orDash(u.Source), npt,
			left(u.PreferredUntil), left(u.ValidUntil), learned, former)
	}
	tw.Flush()
}

// countText is "1.5 MB / 1200 pkts": bytes in SI units, packets exact.
func countText(c Count) string {
	return siBytes(c.Bytes) + " / " + strconv.FormatUint(c.Packets, 10) + " pkts"
}

func siBytes(n uint64) string {
	if n < 1000 {
		return strconv.FormatUint(n, 10) + " B"
	}
	v, unit := float64(n), ""
	for _, u := range []string{"kB", "MB", "GB", "TB", "PB"} {
		v, unit = v/1000, u
		if v < 1000 {
			break
		}
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + unit
}

// formatServices renders the services section: one line per backend.
func formatServices(b *strings.Builder, svcs []Service, now time.Time) {
	if len(svcs) == 0 {
		return
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tBACKEND\tHEALTH\tSINCE\tLAST ERROR")
	for _, s := range svcs {
		for _, be := range s.Backends {
			health := "up"
			switch {
			case !s.Checked:
				health = "unchecked"
			case !be.Healthy:
				health = "down"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, be.Address, health, age(be.Since, now), orDash(be.LastError))
		}
	}
	tw.Flush()
}

// formatReconnects renders one line per uplink that has a reconnector.
func formatReconnects(b *strings.Builder, ups []Uplink, now time.Time) {
	first := true
	for _, u := range ups {
		rc := u.Reconnect
		if rc == nil {
			continue
		}
		if first {
			b.WriteString("\n")
			first = false
		}
		line := "reconnect " + u.Name + ": "
		switch rc.State {
		case "dialling":
			line += "dialling for " + age(rc.Since, now)
		case "pppd":
			line += "waiting for pppd " + strconv.Itoa(rc.PID)
		case "backoff":
			line += "backing off"
		case "takeover":
			line += "reloaded, the previous attempt runs for " + age(rc.Since, now)
		default:
			line += orDash(rc.State)
		}
		if !rc.Until.IsZero() {
			line += ", next attempt in " + age(now, rc.Until)
		}
		b.WriteString(line + "\n")
	}
}

func formatPublishers(b *strings.Builder, pubs []Publisher, now time.Time) {
	if len(pubs) == 0 {
		return
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PUBLISHER\tUPLINK\tKIND\tPUBLISHED\tWHEN\tPENDING\tRESULT\tNEXT TRY\tWHY")
	for _, p := range pubs {
		addr, when, pending, next := "-", "-", "-", "-"
		if p.Address.IsValid() {
			addr = p.Address.String()
		}
		if !p.PublishedAt.IsZero() {
			when = age(p.PublishedAt, now) + " ago"
		}
		if p.Pending.IsValid() {
			pending = p.Pending.String()
		}
		if !p.NextTry.IsZero() {
			next = "in " + age(now, p.NextTry)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Uplink, p.Kind, addr, when,
			pending, orDash(p.Result), next, orDash(p.Reason))
	}
	tw.Flush()
}

func formatDHCP(b *strings.Builder, d *DHCP, now time.Time) {
	if d == nil {
		return
	}
	b.WriteString("\n")
	if d.Mode == "service" {
		fmt.Fprintf(b, "dhcp: service on %s, %d restarts", d.Interface, d.Restarts)
		if !d.LastRestart.IsZero() {
			fmt.Fprintf(b, ", last %s ago", age(d.LastRestart, now))
		}
		b.WriteString("\n")
	} else {
		state := "not listening"
		if d.Listening {
			state = "listening"
		}
		fmt.Fprintf(b, "dhcp: embedded on %s, %s; leases %d in use, %d free, %d resting; %d fixed hosts; %d dropped packets\n",
			d.Interface, state, d.InUse, d.Free, d.Bad, d.StaticHosts, d.Dropped)
		for _, l := range d.Leases {
			fixed := ""
			if l.Static {
				fixed = " (fixed)"
			}
			fmt.Fprintf(b, "  %-15s %-17s %-16s %s, expires in %s%s\n", l.IP, orDash(l.MAC), orDash(l.Hostname), l.State, age(now, l.Expires), fixed)
		}
	}
	if d.LastError != "" {
		fmt.Fprintf(b, "  last error %s ago: %s\n", age(d.LastErrorAt, now), d.LastError)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is a short human duration from t to now: "42s", "5m3s", "3h2m",
// "2d4h". Clock skew (t after now) shows as "0s".
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
	}
}
