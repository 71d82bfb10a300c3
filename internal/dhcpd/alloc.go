package dhcpd

import (
	"errors"
	"net/netip"
	"slices"
	"time"
)

// Lease states. Offered records are never written to the lease file: an
// offer that a restart forgets is simply made again.
const (
	StateOffered  = "offered"  // held for a client between OFFER and REQUEST
	StateBound    = "bound"    // acknowledged; valid until Expires
	StateReleased = "released" // given back; remembered so the client gets it again
	StateBad      = "bad"      // declined by a client or found in use; unusable until Expires
)

// Lease is one address record. Client is the key the client is known by:
// "id:<hex>" for a client identifier (option 61), else "mac:<mac>".
type Lease struct {
	IP       netip.Addr `json:"ip"`
	Client   string     `json:"client,omitempty"`
	MAC      string     `json:"mac,omitempty"`
	Hostname string     `json:"hostname,omitempty"`
	State    string     `json:"state"`
	Expires  time.Time  `json:"expires"`
	Static   bool       `json:"static,omitempty"`
}

// active reports whether the record still holds its address at now.
func (l *Lease) active(now time.Time) bool {
	switch l.State {
	case StateBound, StateOffered, StateBad:
		return now.Before(l.Expires)
	}
	return false
}

// Why a request is refused (the reason of a NAK, logged and counted).
var (
	errNotOurs     = errors.New("address not in this server's pool")
	errTaken       = errors.New("address leased to another client")
	errWrongStatic = errors.New("client has a fixed address and asked for another")
	errExhausted   = errors.New("no free address in the pool")
)

// pool is the address allocator: pure state, times passed in, no I/O.
// The server serialises calls (one mutex).
type pool struct {
	first, last netip.Addr
	network     netip.Prefix // zero until known; excludes network/broadcast/server
	server      netip.Addr

	static   map[string]Host       // by MAC string
	staticIP map[netip.Addr]string // fixed address → MAC
	byIP     map[netip.Addr]*Lease // every record
	byClient map[string]*Lease     // the one record of each client

	lease, maxLease time.Duration
	offerHold       time.Duration // how long an offer keeps its address
	badHold         time.Duration // how long a declined/conflicting address rests
}

func newPool(s Spec) *pool {
	p := &pool{
		first: s.Range[0], last: s.Range[1],
		static:    map[string]Host{},
		staticIP:  map[netip.Addr]string{},
		byIP:      map[netip.Addr]*Lease{},
		byClient:  map[string]*Lease{},
		lease:     s.Lease,
		maxLease:  s.MaxLease,
		offerHold: 30 * time.Second,
		badHold:   10 * time.Minute,
	}
	p.setNetwork(s.Network, s.ServerIP)
	for _, h := range s.Hosts {
		p.static[h.MAC.String()] = h
		p.staticIP[h.IP] = h.MAC.String()
	}
	return p
}

// setNetwork records the LAN subnet and the server's own address, which are
// never handed out.
func (p *pool) setNetwork(n netip.Prefix, server netip.Addr) {
	p.network, p.server = n.Masked(), server
}

// inRange: inside [first, last] and not an address that must never be leased
// dynamically (the server's own, the subnet's network and broadcast
// addresses, fixed addresses).
func (p *pool) inRange(ip netip.Addr) bool {
	if !ip.Is4() || ip.Compare(p.first) < 0 || ip.Compare(p.last) > 0 {
		return false
	}
	if ip == p.server {
		return false
	}
	if p.network.IsValid() && (ip == p.network.Addr() || ip == broadcastOf(p.network)) {
		return false
	}
	_, fixed := p.staticIP[ip]
	return !fixed
}

func broadcastOf(n netip.Prefix) netip.Addr {
	a := n.Masked().Addr().As4()
	bits := n.Bits()
	for i := range 4 {
		for b := range 8 {
			if i*8+b >= bits {
				a[i] |= 0x80 >> b
			}
		}
	}
	return netip.AddrFrom4(a)
}

// allowed reports whether client (with hardware address mac) may hold ip.
func (p *pool) allowed(client, mac string, ip netip.Addr, now time.Time) error {
	if h, ok := p.static[mac]; ok {
		if ip != h.IP {
			return errWrongStatic
		}
	} else if !p.inRange(ip) {
		return errNotOurs
	}
	if r := p.byIP[ip]; r != nil && r.active(now) && (r.Client != client || r.State == StateBad) {
		return errTaken
	}
	return nil
}

// candidate picks the address to offer. known is true when the address is
// the client's own already (fixed, or its previous lease), so it needs no
// conflict check. Order: fixed address; the client's previous address;
// the address it asks for; an address never leased; the free address whose
// record expired longest ago (so a client that comes back soon after its
// lease ran out still finds its address).
func (p *pool) candidate(client, mac string, requested netip.Addr, now time.Time) (ip netip.Addr, known bool, err error) {
	if h, ok := p.static[mac]; ok {
		return h.IP, true, nil
	}
	if r := p.byClient[client]; r != nil && r.State != StateBad && p.allowed(client, mac, r.IP, now) == nil {
		return r.IP, true, nil
	}
	if requested.IsValid() && p.allowed(client, mac, requested, now) == nil {
		return requested, false, nil
	}
	var oldest *Lease
	for a := p.first; a.IsValid() && a.Compare(p.last) <= 0; a = a.Next() {
		if !p.inRange(a) {
			continue
		}
		r := p.byIP[a]
		if r == nil {
			return a, false, nil
		}
		if !r.active(now) && (oldest == nil || r.Expires.Before(oldest.Expires)) {
			oldest = r
		}
	}
	if oldest != nil {
		return oldest.IP, false, nil
	}
	return netip.Addr{}, false, errExhausted
}

// take makes ip the client's record, dropping the client's other record and
// whatever expired record another client had on ip.
func (p *pool) take(client, mac, hostname string, ip netip.Addr) *Lease {
	if old := p.byClient[client]; old != nil && old.IP != ip {
		delete(p.byIP, old.IP)
	}
	r := p.byIP[ip]
	if r == nil || r.Client != client {
		if r != nil && p.byClient[r.Client] == r {
			delete(p.byClient, r.Client)
		}
		r = &Lease{IP: ip, Client: client}
		p.byIP[ip] = r
	}
	p.byClient[client] = r
	r.MAC = mac
	_, r.Static = p.static[mac]
	if h, ok := p.static[mac]; ok && h.Name != "" {
		r.Hostname = h.Name
	} else if hostname != "" {
		r.Hostname = hostname
	}
	return r
}

// offer reserves ip for the client for offerHold. A bound lease of the same
// client on ip stays bound (a DISCOVER from a client that still holds a
// lease must not shorten it).
func (p *pool) offer(client, mac, hostname string, ip netip.Addr, now time.Time) Lease {
	r := p.take(client, mac, hostname, ip)
	if !(r.State == StateBound && r.active(now)) {
		r.State, r.Expires = StateOffered, now.Add(p.offerHold)
	}
	return *r
}

// grant is the lease time for a client that asked for want (0: nothing).
func (p *pool) grant(want time.Duration) time.Duration {
	if want <= 0 {
		return p.lease
	}
	return min(want, p.maxLease)
}

// ack binds ip to the client for the granted lease time, or says why not.
func (p *pool) ack(client, mac, hostname string, ip netip.Addr, want time.Duration, now time.Time) (Lease, time.Duration, error) {
	if err := p.allowed(client, mac, ip, now); err != nil {
		return Lease{}, 0, err
	}
	d := p.grant(want)
	r := p.take(client, mac, hostname, ip)
	r.State, r.Expires = StateBound, now.Add(d)
	return *r, d, nil
}

// forgetOffer drops an offer the client turned down (it chose another
// server); bound leases are kept.
func (p *pool) forgetOffer(client string) {
	if r := p.byClient[client]; r != nil && r.State == StateOffered {
		r.State = StateReleased
	}
}

// markBad takes ip out of use for badHold (a DECLINE, or a conflict found
// before an offer). The client that had it loses its record, so its next
// DISCOVER gets another address.
func (p *pool) markBad(ip netip.Addr, now time.Time) {
	if r := p.byIP[ip]; r != nil && p.byClient[r.Client] == r {
		delete(p.byClient, r.Client)
	}
	p.byIP[ip] = &Lease{IP: ip, State: StateBad, Expires: now.Add(p.badHold)}
}

// decline handles a DHCPDECLINE: only the client the address was given to
// can decline it.
func (p *pool) decline(client string, ip netip.Addr, now time.Time) bool {
	r := p.byIP[ip]
	if r == nil || r.Client != client || r.Static {
		return false
	}
	p.markBad(ip, now)
	return true
}

// release handles a DHCPRELEASE: the address is free at once and remembered
// for the client.
func (p *pool) release(client string, ip netip.Addr, now time.Time) bool {
	r := p.byIP[ip]
	if r == nil || r.Client != client || r.State != StateBound {
		return false
	}
	r.State, r.Expires = StateReleased, now
	return true
}

// counts returns the leases in use (bound and unexpired, fixed ones
// included), the free pool addresses, and the pool addresses resting as bad.
func (p *pool) counts(now time.Time) (inUse, free, bad int) {
	size := 0
	for a := p.first; a.IsValid() && a.Compare(p.last) <= 0; a = a.Next() {
		if p.inRange(a) {
			size++
		}
	}
	held := 0
	for ip, r := range p.byIP {
		if !r.active(now) {
			continue
		}
		switch r.State {
		case StateBound:
			inUse++
		case StateBad:
			bad++
		}
		if p.inRange(ip) {
			held++
		}
	}
	return inUse, size - held, bad
}

// records returns the records worth keeping across a restart, sorted by
// address: everything but offers.
func (p *pool) records() []Lease {
	out := make([]Lease, 0, len(p.byIP))
	for _, r := range p.byIP {
		if r.State != StateOffered {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}

// restore loads records from the lease file. Records outside the pool and
// the fixed addresses (the config changed) are dropped; so are fixed-host
// records whose MAC now has another address.
func (p *pool) restore(recs []Lease) {
	for _, r := range recs {
		r := r
		if !r.IP.Is4() {
			continue
		}
		if h, ok := p.static[r.MAC]; ok {
			if h.IP != r.IP {
				continue
			}
		} else if !p.inRange(r.IP) {
			continue
		}
		switch r.State {
		case StateBad:
			r.Client = ""
		case StateBound, StateReleased:
			if r.Client == "" {
				continue
			}
			if old := p.byClient[r.Client]; old != nil {
				delete(p.byIP, old.IP)
			}
			p.byClient[r.Client] = &r
		default:
			continue
		}
		p.byIP[r.IP] = &r
	}
}

// snapshot returns the active records sorted by address, for Status.
func (p *pool) snapshot(now time.Time) []Lease {
	var out []Lease
	for _, r := range p.byIP {
		if r.active(now) && r.State != StateOffered {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out
}
