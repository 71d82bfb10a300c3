package metrics

import (
	"bytes"
	"io"
	"strconv"
	"time"
)

// Sources are the daemon's parts whose state other goroutines than the
// loop own: the [[service]] backend checker, the address publishers and the
// LAN DHCP server. Their series are read from them at every scrape (never
// cached), so a scrape shows what `uplinkd status` would show at that
// moment, and a backend, publisher or DHCP server a reload removed has no
// series left. A nil function exports nothing.
type Sources struct {
	Services   func() []Backend
	Publishers func() []Publisher
	// DHCP reports the LAN DHCP side; ok is false when [lan.dhcp] is off.
	DHCP func() (d DHCP, ok bool)
	// Traffic reads the per-uplink traffic counters (at every scrape).
	Traffic func() []Traffic
	// LAN6 reports the uplinks' delegated IPv6 prefixes ([lan.ipv6]).
	LAN6 func() []Delegation
	// RA reports the router advertisement sender ([lan.ipv6] announce);
	// ok is false when it is off.
	RA func() (ra RA, ok bool)
}

// RA is the router advertisement sender: the prefixes it announces and
// what it sent.
type RA struct {
	Prefixes []RAPrefix
	// RouterLifetime is the router lifetime announced (0: not a default
	// router).
	RouterLifetime time.Duration
	Sent           uint64
	LastSent       time.Time // zero: none yet
}

// RAPrefix is one announced /64.
type RAPrefix struct {
	Prefix, Uplink   string
	Deprecated       bool
	Preferred, Valid time.Duration
}

// Delegation is an uplink's delegated IPv6 prefix: its current one, where
// it comes from (config, learned) and when its lifetimes end (zero:
// infinite).
type Delegation struct {
	Uplink, Prefix, Source     string
	PreferredUntil, ValidUntil time.Time
}

// Traffic is one uplink's counter in one direction (in, out, forward_in,
// forward_out).
type Traffic struct {
	Uplink, Direction string
	Packets, Bytes    uint64
}

// Backend is one backend of a [[service]].
type Backend struct {
	Service string
	Address string // IPv4:PORT
	Healthy bool   // in the set new connections are balanced over
}

// Publisher is one [[uplink.publish]] entry.
type Publisher struct {
	Uplink, Name string
	// Result of the last attempt: ok, retry, permanent, running; "" none yet.
	Result string
	// PublishedAt is when an address was last published (zero: never).
	PublishedAt time.Time
}

// DHCP is the LAN DHCP side.
type DHCP struct {
	Mode                 string // embedded or service
	Listening            bool
	Binds                int
	InUse, Free, Resting int
	Dropped              uint64
	Restarts             int // service mode
}

// publishResults are the results the last-result gauge has a series for.
var publishResults = [...]string{"none", "running", "ok", "retry", "permanent"}

// SetSources sets where the live series come from; call it once, before
// the endpoint serves.
func (r *Registry) SetSources(s Sources) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.sources = s
	r.mu.Unlock()
}

// PublishResult counts one finished attempt of a publisher:
// uplinkd_publisher_attempts_total{uplink,publisher,result}.
func (r *Registry) PublishResult(uplink, publisher, result string) {
	if r == nil {
		return
	}
	k := [3]string{uplink, publisher, result}
	r.mu.Lock()
	c := r.publishers[k]
	if c == nil {
		c = r.set.counter(`uplinkd_publisher_attempts_total{uplink="` + escapeLabel(uplink) +
			`",publisher="` + escapeLabel(publisher) + `",result="` + escapeLabel(result) + `"}`)
		r.publishers[k] = c
	}
	r.mu.Unlock()
	c.Inc()
}

// family writes one metric family: HELP and TYPE once, then its samples.
type family struct {
	name, typ, help string
	lines           bytes.Buffer
}

func (f *family) add(labels string, v float64) {
	f.lines.WriteString(f.name)
	if labels != "" {
		f.lines.WriteString("{" + labels + "}")
	}
	f.lines.WriteByte(' ')
	f.lines.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	f.lines.WriteByte('\n')
}

func (f *family) writeTo(w io.Writer) {
	if f.lines.Len() == 0 {
		return
	}
	io.WriteString(w, "# HELP "+f.name+" "+f.help+"\n# TYPE "+f.name+" "+f.typ+"\n")
	w.Write(f.lines.Bytes())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writeLive writes the series of the Sources; writeTo calls it at every
// scrape, after the registered series.
func (r *Registry) writeLive(w io.Writer) {
	r.mu.Lock()
	src := r.sources
	r.mu.Unlock()
	var fams []*family
	newFam := func(name, typ, help string) *family {
		f := &family{name: name, typ: typ, help: help}
		fams = append(fams, f)
		return f
	}
	if src.Services != nil {
		healthy := newFam("uplinkd_service_backend_healthy", "gauge",
			"1 while the backend is in its service's healthy set (unchecked services: always 1)")
		for _, b := range src.Services() {
			healthy.add(`service="`+escapeLabel(b.Service)+`",backend="`+escapeLabel(b.Address)+`"`, b2f(b.Healthy))
		}
	}
	if src.Publishers != nil {
		last := newFam("uplinkd_publisher_last_result", "gauge",
			"1 for the result of the publisher's last attempt (none: no attempt yet)")
		at := newFam("uplinkd_publisher_published_timestamp_seconds", "gauge",
			"Unix time an address was last published; absent while never")
		for _, p := range src.Publishers() {
			lbl := `uplink="` + escapeLabel(p.Uplink) + `",publisher="` + escapeLabel(p.Name) + `"`
			res := p.Result
			if res == "" {
				res = "none"
			}
			for _, name := range publishResults {
				last.add(lbl+`,result="`+name+`"`, b2f(name == res))
			}
			if !p.PublishedAt.IsZero() {
				at.add(lbl, float64(p.PublishedAt.UnixNano())/1e9)
			}
		}
	}
	if src.DHCP != nil {
		if d, ok := src.DHCP(); ok {
			mode := `mode="` + escapeLabel(d.Mode) + `"`
			newFam("uplinkd_dhcp_up", "gauge", "1 with [lan.dhcp] on, by mode (embedded, service)").add(mode, 1)
			if d.Mode == "service" {
				newFam("uplinkd_dhcp_service_restarts_total", "counter",
					"restarts of the external DHCP server").add("", float64(d.Restarts))
			} else {
				newFam("uplinkd_dhcp_listening", "gauge", "1 while the embedded server's socket is bound").add("", b2f(d.Listening))
				newFam("uplinkd_dhcp_binds_total", "counter", "times the embedded server bound its socket").add("", float64(d.Binds))
				newFam("uplinkd_dhcp_leases_in_use", "gauge", "leases held, fixed hosts included").add("", float64(d.InUse))
				newFam("uplinkd_dhcp_leases_free", "gauge", "pool addresses free to lease").add("", float64(d.Free))
				newFam("uplinkd_dhcp_addresses_resting", "gauge",
					"pool addresses resting after a decline or an address conflict").add("", float64(d.Resting))
				newFam("uplinkd_dhcp_dropped_packets_total", "counter",
					"DHCP packets dropped (malformed, relayed, over the rate limit)").add("", float64(d.Dropped))
			}
		}
	}
	if src.Traffic != nil {
		bytesF := newFam("uplinkd_uplink_traffic_bytes_total", "counter",
			"bytes counted on the uplink's interface by uplinkd's own netfilter rules, by direction")
		pktsF := newFam("uplinkd_uplink_traffic_packets_total", "counter",
			"packets counted on the uplink's interface by uplinkd's own netfilter rules, by direction")
		for _, t := range src.Traffic() {
			lbl := `uplink="` + escapeLabel(t.Uplink) + `",direction="` + escapeLabel(t.Direction) + `"`
			bytesF.add(lbl, float64(t.Bytes))
			pktsF.add(lbl, float64(t.Packets))
		}
	}
	if src.LAN6 != nil {
		info := newFam("uplinkd_lan6_delegated_prefix_info", "gauge",
			"1 for the uplink's current delegated IPv6 prefix, with its source (config, learned)")
		pref := newFam("uplinkd_lan6_delegation_preferred_until_timestamp_seconds", "gauge",
			"Unix time the delegation's preferred lifetime ends; absent when infinite")
		valid := newFam("uplinkd_lan6_delegation_valid_until_timestamp_seconds", "gauge",
			"Unix time the delegation's valid lifetime ends (uplinkd drops it then); absent when infinite")
		for _, d := range src.LAN6() {
			lbl := `uplink="` + escapeLabel(d.Uplink) + `"`
			info.add(lbl+`,prefix="`+escapeLabel(d.Prefix)+`",source="`+escapeLabel(d.Source)+`"`, 1)
			if !d.PreferredUntil.IsZero() {
				pref.add(lbl, float64(d.PreferredUntil.Unix()))
			}
			if !d.ValidUntil.IsZero() {
				valid.add(lbl, float64(d.ValidUntil.Unix()))
			}
		}
	}
	if src.RA != nil {
		if ra, ok := src.RA(); ok {
			state := newFam("uplinkd_lan6_prefix_preferred", "gauge",
				"1 while the announced LAN /64 is preferred, 0 while it is deprecated (its uplink failed, is drained or lost the delegation)")
			pl := newFam("uplinkd_lan6_prefix_preferred_lifetime_seconds", "gauge", "preferred lifetime last announced for the LAN /64")
			vl := newFam("uplinkd_lan6_prefix_valid_lifetime_seconds", "gauge", "valid lifetime last announced for the LAN /64")
			for _, p := range ra.Prefixes {
				lbl := `prefix="` + escapeLabel(p.Prefix) + `",uplink="` + escapeLabel(p.Uplink) + `"`
				v := 1.0
				if p.Deprecated {
					v = 0
				}
				state.add(lbl, v)
				pl.add(lbl, p.Preferred.Seconds())
				vl.add(lbl, p.Valid.Seconds())
			}
			newFam("uplinkd_lan6_router_lifetime_seconds", "gauge", "router lifetime announced on the LAN (0: hosts do not route through the gateway)").add("", ra.RouterLifetime.Seconds())
			newFam("uplinkd_lan6_ra_sent_total", "counter", "router advertisements sent on the LAN").add("", float64(ra.Sent))
			if !ra.LastSent.IsZero() {
				newFam("uplinkd_lan6_ra_last_sent_timestamp_seconds", "gauge", "Unix time the last router advertisement left").add("", float64(ra.LastSent.UnixMilli())/1000)
			}
		}
	}
	for _, f := range fams {
		f.writeTo(w)
	}
}
