package dhcpd

import (
	"context"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/uplinkd/uplinkd/internal/lograte"
)

// Request states of RFC 2131 §4.3.2, told apart by the packet itself (and,
// for RENEWING against REBINDING, by whether it was sent to our address or
// broadcast).
const (
	reqSelecting  = "selecting"
	reqInitReboot = "init-reboot"
	reqRenewing   = "renewing"
	reqRebinding  = "rebinding"
)

// counters are the handler's statistics (Status); atomic so Status never
// waits for a conflict check.
type counters struct {
	malformed, ignored, busy          atomic.Uint64
	discovers, offers, acks, naks     atomic.Uint64
	selecting, initReboot, renewing   atomic.Uint64
	rebinding, declines, releases     atomic.Uint64
	informs, conflicts, noFreeAddress atomic.Uint64
}

// handler turns one request into at most one reply. It holds the pool and
// everything a reply needs; it does no socket I/O, so tests and the fuzz
// target drive it directly.
type handler struct {
	mu   sync.Mutex // guards pool, opts, net, gen
	pool *pool
	opts replyOptions
	net  netip.Prefix

	gen uint64 // bumped by every change the lease file must record

	// dirty wakes the committer (server.go) after a change; nil in tests
	// that drive the handler alone.
	dirty chan struct{}

	// conflict, if set, reports whether ip answers on the LAN (conflict.go);
	// read under mu (a re-bind replaces it), called without.
	conflict func(ctx context.Context, ip netip.Addr, mac net.HardwareAddr) bool
	save     func([]Lease) error // the committer's; the handler never writes
	now      func() time.Time
	log      *slog.Logger
	// lanWarn limits the warnings a LAN host triggers with every packet it
	// sends (a full pool, a conflict, a decline) to one per event and
	// warnEvery, each with the count suppressed before it; nil logs all.
	lanWarn *lograte.Limiter
	stats   counters
}

// warnEvery is how often a warning that LAN traffic triggers is logged at
// most. One host asking a full pool sends a DISCOVER every few milliseconds
// to seconds; logging each one buried every other log line (issue 17).
const warnEvery = time.Minute

// warnLAN logs a warning triggered by a LAN packet, rate-limited by event:
// not by MAC, which the sender chooses (a flood with a new chaddr per
// packet must not get through). The record names the latest sender.
func (h *handler) warnLAN(event, msg string, args ...any) {
	args = append([]any{"event", event}, args...)
	if h.lanWarn == nil {
		h.log.Warn(msg, args...)
		return
	}
	h.lanWarn.Warn(h.log, event, msg, args...)
}

// reply is a packet to send and where to. gen > 0: it may only leave once
// the lease file holds that generation of the table (an ACK is a promise
// that must survive a crash).
type reply struct {
	msg *dhcpv4.DHCPv4
	to  netip.AddrPort
	gen uint64
}

var (
	bcastClient = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), dhcpv4.ClientPort)
)

// parse decodes and checks a request; nil means dropped (counted).
func (h *handler) parse(b []byte) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.FromBytes(b)
	if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest || m.HWType != iana.HWTypeEthernet ||
		len(m.ClientHWAddr) != 6 || m.MessageType() == dhcpv4.MessageTypeNone {
		h.stats.malformed.Add(1)
		return nil
	}
	if ip := m.GatewayIPAddr.To4(); ip != nil && !ip.IsUnspecified() {
		// Relayed requests come from other subnets; this server serves its
		// own link only.
		h.stats.ignored.Add(1)
		return nil
	}
	return m
}

// clientKey identifies a client: its client identifier if it sends one
// (RFC 2131 §4.2), else its hardware address.
func clientKey(m *dhcpv4.DHCPv4) string {
	if id := m.Options.Get(dhcpv4.OptionClientIdentifier); len(id) > 0 {
		return "id:" + hex.EncodeToString(id)
	}
	return "mac:" + m.ClientHWAddr.String()
}

// cleanHostname keeps a client-sent hostname only if it is a plain label
// (it ends up in the lease file and in status).
func cleanHostname(s string) string {
	if len(s) == 0 || len(s) > 63 {
		return ""
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return ""
		}
	}
	return s
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// handle answers one packet. unicast says the packet was addressed to the
// server's own address (a RENEWING client) rather than broadcast.
func (h *handler) handle(ctx context.Context, b []byte, unicast bool) *reply {
	m := h.parse(b)
	if m == nil {
		return nil
	}
	return h.handleMsg(ctx, m, unicast)
}

func (h *handler) handleMsg(ctx context.Context, m *dhcpv4.DHCPv4, unicast bool) *reply {
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		h.stats.discovers.Add(1)
		return h.discover(ctx, m)
	case dhcpv4.MessageTypeRequest:
		return h.request(m, unicast)
	case dhcpv4.MessageTypeDecline:
		h.decline(m)
	case dhcpv4.MessageTypeRelease:
		h.release(m)
	case dhcpv4.MessageTypeInform:
		return h.inform(m)
	default: // server messages sent to us, or unknown types
		h.stats.ignored.Add(1)
	}
	return nil
}

// maxConflictTries bounds how many addresses one DISCOVER may find in use
// before the server gives up on it (the client retries).
const maxConflictTries = 4

func (h *handler) discover(ctx context.Context, m *dhcpv4.DHCPv4) *reply {
	client, mac := clientKey(m), m.ClientHWAddr.String()
	host := cleanHostname(m.HostName())
	for range maxConflictTries {
		h.mu.Lock()
		ip, known, err := h.pool.candidate(client, mac, addrOf(m.RequestedIPAddress()), h.now())
		if err != nil {
			h.mu.Unlock()
			h.stats.noFreeAddress.Add(1)
			h.warnLAN("dhcp_pool_exhausted", "dhcp: no address to offer", "mac", mac, "reason", err.Error())
			return nil
		}
		h.pool.offer(client, mac, host, ip, h.now())
		check := h.conflict
		h.mu.Unlock()
		if !known && check != nil && check(ctx, ip, m.ClientHWAddr) {
			h.stats.conflicts.Add(1)
			h.warnLAN("dhcp_conflict", "dhcp: pool address in use by an unknown host, skipped", "ip", ip.String())
			h.mu.Lock()
			h.pool.markBad(ip, h.now())
			h.mu.Unlock()
			continue
		}
		h.mu.Lock()
		d := h.pool.grant(m.IPAddressLeaseTime(0))
		mods := append([]dhcpv4.Modifier{
			dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
			dhcpv4.WithYourIP(ip.AsSlice()),
		}, h.opts.modifiers(d, staticName(h.pool, mac))...)
		h.mu.Unlock()
		h.stats.offers.Add(1)
		return h.reply(m, mods, bcastClient)
	}
	return nil
}

func staticName(p *pool, mac string) string {
	if hst, ok := p.static[mac]; ok {
		return hst.Name
	}
	return ""
}

// requestState classifies a DHCPREQUEST (RFC 2131 §4.3.2).
func requestState(m *dhcpv4.DHCPv4, unicast bool) string {
	ciaddr := addrOf(m.ClientIPAddr)
	switch {
	case m.Options.Has(dhcpv4.OptionServerIdentifier):
		return reqSelecting
	case m.Options.Has(dhcpv4.OptionRequestedIPAddress) && !ciaddr.IsValid():
		return reqInitReboot
	case ciaddr.IsValid() && unicast:
		return reqRenewing
	case ciaddr.IsValid():
		return reqRebinding
	}
	return ""
}

func (h *handler) request(m *dhcpv4.DHCPv4, unicast bool) *reply {
	client, mac := clientKey(m), m.ClientHWAddr.String()
	state := requestState(m, unicast)
	var ip netip.Addr
	switch state {
	case reqSelecting:
		h.stats.selecting.Add(1)
		h.mu.Lock()
		ours := addrOf(m.ServerIdentifier()) == h.opts.serverID
		if !ours {
			// The client took another server's offer.
			h.pool.forgetOffer(client)
		}
		h.mu.Unlock()
		if !ours {
			return nil
		}
		ip = addrOf(m.RequestedIPAddress())
	case reqInitReboot:
		h.stats.initReboot.Add(1)
		ip = addrOf(m.RequestedIPAddress())
	case reqRenewing:
		h.stats.renewing.Add(1)
		ip = addrOf(m.ClientIPAddr)
	case reqRebinding:
		h.stats.rebinding.Add(1)
		ip = addrOf(m.ClientIPAddr)
	default:
		h.stats.malformed.Add(1)
		return nil
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	var err error
	var d time.Duration
	if !ip.IsValid() || !h.net.Contains(ip) {
		err = errNotOurs
	} else {
		_, d, err = h.pool.ack(client, mac, cleanHostname(m.HostName()), ip, m.IPAddressLeaseTime(0), now)
	}
	if err != nil {
		h.stats.naks.Add(1)
		h.log.Info("dhcp: request refused", "event", "dhcp_nak", "mac", mac, "ip", ip.String(), "state", state, "reason", err.Error())
		return h.reply(m, []dhcpv4.Modifier{
			dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(h.opts.serverID.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptMessage(err.Error())),
		}, bcastClient)
	}
	gen := h.changedLocked()
	h.stats.acks.Add(1)
	h.log.Debug("dhcp: lease acknowledged", "event", "dhcp_ack", "mac", mac, "ip", ip.String(), "state", state, "lease", d.String())
	mods := append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(ip.AsSlice()),
	}, h.opts.modifiers(d, staticName(h.pool, mac))...)
	to := bcastClient
	if ci := addrOf(m.ClientIPAddr); ci.IsValid() {
		to = netip.AddrPortFrom(ci, dhcpv4.ClientPort)
	}
	r := h.reply(m, mods, to)
	if r != nil {
		r.gen = gen
	}
	return r
}

func (h *handler) decline(m *dhcpv4.DHCPv4) {
	h.stats.declines.Add(1)
	ip := addrOf(m.RequestedIPAddress())
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pool.decline(clientKey(m), ip, h.now()) {
		h.warnLAN("dhcp_decline", "dhcp: client declined its address (in use by another host)", "mac", m.ClientHWAddr.String(), "ip", ip.String())
		h.changedLocked()
	}
}

func (h *handler) release(m *dhcpv4.DHCPv4) {
	h.stats.releases.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pool.release(clientKey(m), addrOf(m.ClientIPAddr), h.now()) {
		h.changedLocked()
	}
}

// inform answers a DHCPINFORM: options only, no address, no lease time.
func (h *handler) inform(m *dhcpv4.DHCPv4) *reply {
	h.stats.informs.Add(1)
	h.mu.Lock()
	mods := append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck)}, h.opts.modifiers(0, "")...)
	h.mu.Unlock()
	to := bcastClient
	if ci := addrOf(m.ClientIPAddr); ci.IsValid() {
		to = netip.AddrPortFrom(ci, dhcpv4.ClientPort)
	}
	return h.reply(m, mods, to)
}

func (h *handler) reply(req *dhcpv4.DHCPv4, mods []dhcpv4.Modifier, to netip.AddrPort) *reply {
	r, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil { // only fails for a request without a transaction ID source; never here
		h.stats.ignored.Add(1)
		return nil
	}
	return &reply{msg: r, to: to}
}

// changedLocked records a change of the lease table (mu is held) and
// wakes the committer; it returns the generation to wait for.
func (h *handler) changedLocked() uint64 {
	h.gen++
	if h.dirty != nil {
		select {
		case h.dirty <- struct{}{}:
		default:
		}
	}
	return h.gen
}
