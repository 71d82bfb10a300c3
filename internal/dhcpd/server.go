package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lograte"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// Server is the DHCP side of the LAN: an embedded DHCPv4 server or the
// supervisor of an external one, depending on Spec.Mode.
type Server struct {
	spec Spec
	log  *slog.Logger
	h    *handler    // mode embedded
	sup  *supervisor // mode service

	linkUp   atomic.Int32 // 0 unknown, 1 up, 2 down: the last LinkChanged
	wentDown atomic.Bool  // a LinkChanged(false) not yet seen by Run
	rebind   atomic.Bool  // a Rebind not yet seen by Run
	linkc    chan struct{}
	closed   chan struct{}
	closeOne sync.Once

	commitMu sync.Mutex
	pending  []pendingReply // replies waiting for the lease file

	mu        sync.Mutex // guards the fields below
	bound     bool
	lastErr   string
	lastErrAt time.Time
	binds     int
}

// Status is what `uplinkd status` shows about DHCP.
type Status struct {
	Mode      string `json:"mode"`
	Interface string `json:"interface"`

	// Embedded mode.
	Listening   bool              `json:"listening"`    // the socket is bound
	Binds       int               `json:"binds"`        // socket binds so far (re-binds after link flaps)
	InUse       int               `json:"in_use"`       // bound leases, fixed hosts included
	Free        int               `json:"free"`         // pool addresses nobody holds
	Bad         int               `json:"bad"`          // pool addresses resting after a DECLINE or conflict
	StaticHosts int               `json:"static_hosts"` // configured fixed hosts
	Leases      []Lease           `json:"leases"`
	Dropped     uint64            `json:"dropped"` // malformed, relayed or over-limit packets
	Counters    map[string]uint64 `json:"counters"`

	// Service mode.
	Restarts    int       `json:"restarts,omitempty"`
	LastRestart time.Time `json:"last_restart,omitzero"`

	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Text renders the status for `uplinkd status` (one renderer for the CLI
// and the logs; JSON uses the struct tags).
func (st Status) Text() string {
	var b strings.Builder
	if st.Mode == ModeService {
		fmt.Fprintf(&b, "dhcp: service on %s: %d restarts", st.Interface, st.Restarts)
		if !st.LastRestart.IsZero() {
			fmt.Fprintf(&b, ", last %s", st.LastRestart.UTC().Format(time.RFC3339))
		}
		b.WriteString("\n")
	} else {
		state := "not listening"
		if st.Listening {
			state = "listening"
		}
		fmt.Fprintf(&b, "dhcp: embedded on %s, %s (bound %d times)\n", st.Interface, state, st.Binds)
		fmt.Fprintf(&b, "  leases: %d in use, %d free, %d resting after a conflict; %d fixed host", st.InUse, st.Free, st.Bad, st.StaticHosts)
		if st.StaticHosts != 1 {
			b.WriteString("s")
		}
		fmt.Fprintf(&b, "\n  dropped packets: %d\n", st.Dropped)
		for _, l := range st.Leases {
			name := l.Hostname
			if name == "" {
				name = "-"
			}
			fmt.Fprintf(&b, "  %-16s %-18s %-16s %s until %s", l.IP, l.MAC, name, l.State, l.Expires.UTC().Format(time.RFC3339))
			if l.Static {
				b.WriteString(" (fixed)")
			}
			b.WriteString("\n")
		}
	}
	if st.LastError != "" {
		fmt.Fprintf(&b, "  last error: %s (%s)\n", st.LastError, st.LastErrorAt.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// New checks spec and prepares a server; nothing is opened until Run. In
// mode embedded the lease file is read here: a file that cannot be parsed
// is renamed to *.bad (kept for the admin) and the server starts empty.
func New(spec Spec, log *slog.Logger) (*Server, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{spec: spec, log: log, linkc: make(chan struct{}, 1), closed: make(chan struct{})}
	if spec.Mode == ModeService {
		s.sup = newSupervisor(spec.Service, spec.Interface, log)
		return s, nil
	}
	st := store{dir: spec.StateDir}
	h := &handler{
		pool:    newPool(spec),
		net:     spec.Network,
		save:    st.save,
		now:     time.Now,
		dirty:   make(chan struct{}, 1),
		log:     log,
		lanWarn: lograte.New(warnEvery),
	}
	if spec.ServerIP.IsValid() {
		h.opts = newReplyOptions(spec, spec.ServerIP, spec.Network)
	}
	recs, err := st.load()
	if err != nil {
		log.Error("dhcp: lease file unreadable, starting with no leases", "event", "dhcp_store_failed", "reason", err.Error())
		_ = os.Rename(st.path(), st.path()+".bad")
		s.setErr(err)
	}
	h.pool.restore(recs)
	s.h = h
	return s, nil
}

func (s *Server) setErr(err error) {
	s.mu.Lock()
	s.lastErr, s.lastErrAt = err.Error(), time.Now()
	s.mu.Unlock()
}

// LinkChanged tells the server that the LAN interface went up (true) or
// down/away (false). It never blocks. In mode embedded the socket is bound
// again when the link comes back; in mode service the unit is restarted.
func (s *Server) LinkChanged(up bool) {
	v := int32(2)
	if up {
		v = 1
	} else {
		// Wake-ups coalesce; this flag keeps a down-and-up-again between
		// two of them from going unnoticed.
		s.wentDown.Store(true)
	}
	s.linkUp.Store(v)
	select {
	case s.linkc <- struct{}{}:
	default: // a wake-up is pending; it reads the latest state
	}
}

// Rebind makes the server bind its socket again (and re-read the
// interface's address when Spec.ServerIP is not set): the daemon calls it
// when the LAN interface's address changed without a link flap. It never
// blocks. In mode service it does nothing.
func (s *Server) Rebind() {
	s.rebind.Store(true)
	select {
	case s.linkc <- struct{}{}:
	default:
	}
}

// Close stops Run. It is safe to call more than once, before or after Run.
func (s *Server) Close() error {
	s.closeOne.Do(func() { close(s.closed) })
	return nil
}

// Run serves until ctx ends or Close is called, and returns when every
// goroutine it started has ended.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if s.sup != nil {
		return s.sup.run(ctx, s.linkc, &s.linkUp, &s.wentDown)
	}
	return s.serve(ctx)
}

// sockets is what one bind opens in the server's namespace.
type sockets struct {
	server  netip.Addr // the address the socket's replies come from
	conn    *ipv4.PacketConn
	raw     *net.UDPConn
	checker *conflictChecker
}

func (k *sockets) close() {
	k.raw.Close()
	if k.checker != nil {
		k.checker.close()
	}
}

// openSockets binds port 67 on the LAN interface and, with the conflict
// check on, its ICMP socket; it is the one place that enters the namespace.
func (s *Server) openSockets() (*sockets, netip.Addr, netip.Prefix, error) {
	var k sockets
	server, network := s.spec.ServerIP, s.spec.Network
	err := netnsx.Do(s.spec.NetNS, func() error {
		ifi, err := net.InterfaceByName(s.spec.Interface)
		if err != nil {
			return fmt.Errorf("interface %s: %w", s.spec.Interface, err)
		}
		if !server.IsValid() {
			if server, network, err = interfaceAddr(ifi); err != nil {
				return err
			}
		}
		c, err := server4.NewIPv4UDPConn(s.spec.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
		if err != nil {
			return fmt.Errorf("bind DHCP socket on %s: %w", s.spec.Interface, err)
		}
		k.raw = c
		// A LAN of devices powering up at once sends a burst of
		// broadcasts; the default buffer (~200 KiB, ~100 packets) drops
		// part of it. FORCE passes rmem_max (we are root); else best effort.
		if rc, err := c.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
					_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
				}
			})
		}
		k.conn = ipv4.NewPacketConn(c)
		// The destination address tells RENEWING (unicast to us) from
		// REBINDING (broadcast).
		if err := k.conn.SetControlMessage(ipv4.FlagDst, true); err != nil {
			c.Close()
			return fmt.Errorf("DHCP socket: %w", err)
		}
		if s.spec.ConflictCheck {
			// Serving without the check beats not serving: the clients'
			// own ARP check (DECLINE) still catches most conflicts.
			if k.checker, err = newConflictChecker(s.spec.Interface, ifi.Index, s.spec.ConflictTimeout); err != nil {
				s.setErr(err)
				s.log.Warn("dhcp: serving without the conflict check", "event", "dhcp_conflict_check_off", "iface", s.spec.Interface, "reason", err.Error())
				k.checker = nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, server, network, err
	}
	return &k, server, network, nil
}

// interfaceAddr returns the first IPv4 address of ifi and its subnet.
func interfaceAddr(ifi *net.Interface) (netip.Addr, netip.Prefix, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok {
				ones, _ := n.Mask.Size()
				return ip, netip.PrefixFrom(ip, ones).Masked(), nil
			}
		}
	}
	return netip.Addr{}, netip.Prefix{}, fmt.Errorf("%s has no IPv4 address", ifi.Name)
}

// Bind retry delays while the interface is missing or has no address; a
// LinkChanged(true) retries at once.
const (
	minRetry = 500 * time.Millisecond
	maxRetry = 30 * time.Second
	// maxChecks bounds the DISCOVERs waiting for a conflict check; more
	// are dropped (the clients retry).
	maxChecks = 256
	// rcvBuf is the DHCP socket's receive buffer.
	rcvBuf = 2 << 20
)

// serve owns the socket: it binds, re-binds when the link comes back or
// the socket fails, and waits for its readers before returning.
func (s *Server) serve(ctx context.Context) error {
	var (
		wg      sync.WaitGroup
		cur     *sockets
		failed  = make(chan *sockets, 1) // a reader whose socket broke
		retry   = minRetry
		timer   = time.NewTimer(0) // first bind at once
		lastUp  = s.linkUp.Load()
		checks  = make(chan struct{}, maxChecks)
		workers sync.WaitGroup
	)
	wg.Add(1)
	go func() { defer wg.Done(); s.commit(ctx) }()
	defer func() {
		timer.Stop()
		if cur != nil {
			cur.close()
		}
		wg.Wait()
		workers.Wait()
		s.mu.Lock()
		s.bound = false
		s.mu.Unlock()
	}()
	unbind := func() {
		if cur != nil {
			cur.close()
			cur = nil
			s.mu.Lock()
			s.bound = false
			s.mu.Unlock()
		}
	}
	bind := func() {
		unbind()
		k, server, network, err := s.openSockets()
		if err == nil {
			err = s.spec.checkNetwork(network, server)
			if err != nil {
				k.close()
			}
		}
		if err != nil {
			s.setErr(err)
			s.log.Warn("dhcp: cannot listen on the LAN interface, will retry", "event", "dhcp_bind_failed", "iface", s.spec.Interface, "reason", err.Error(), "retry", retry.String())
			timer.Reset(retry)
			retry = min(2*retry, maxRetry)
			return
		}
		retry = minRetry
		k.server = server
		cur = k
		s.h.mu.Lock()
		s.h.opts = newReplyOptions(s.spec, server, network)
		s.h.net = network
		s.h.pool.setNetwork(network, server)
		if k.checker != nil {
			s.h.conflict = k.checker.inUse
		} else {
			s.h.conflict = nil
		}
		s.h.mu.Unlock()
		s.mu.Lock()
		s.bound = true
		s.binds++
		s.mu.Unlock()
		s.log.Info("dhcp: serving", "event", "dhcp_listening", "iface", s.spec.Interface, "server", server.String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k.checker != nil {
				wg.Add(1)
				go func() { defer wg.Done(); k.checker.read() }()
			}
			err := s.read(ctx, k, checks, &workers)
			if err != nil && ctx.Err() == nil {
				select {
				case failed <- k:
				default:
				}
			}
		}()
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			if cur == nil {
				bind()
			}
		case k := <-failed:
			if k == cur {
				s.log.Warn("dhcp: socket failed, binding again", "event", "dhcp_rebind", "iface", s.spec.Interface)
				unbind()
				timer.Reset(minRetry)
			}
		case <-s.linkc:
			flapped := s.wentDown.Swap(false)
			asked := s.rebind.Swap(false)
			up := s.linkUp.Load()
			// The socket is bound to the interface by index: an interface
			// that went away and came back is a new one, so bind again on
			// every return of the link (and at once when not bound).
			if asked && up != 2 || up == 1 && (flapped || lastUp != 1 || cur == nil) {
				s.log.Info("dhcp: LAN link back, binding again", "event", "dhcp_rebind", "iface", s.spec.Interface)
				retry = minRetry
				bind()
			}
			lastUp = up
		}
	}
}

// read serves one socket until it is closed or fails.
func (s *Server) read(ctx context.Context, k *sockets, checks chan struct{}, workers *sync.WaitGroup) error {
	b := make([]byte, 1500)
	for {
		n, cm, _, err := k.conn.ReadFrom(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		// Sent to our own address (not broadcast): a RENEWING client.
		unicast := cm != nil && cm.Dst.Equal(k.server.AsSlice())
		m := s.h.parse(b[:n])
		if m == nil {
			continue
		}
		// A DISCOVER that may need a conflict check waits for it on a
		// goroutine of its own, so other clients are not held up.
		if m.MessageType() == dhcpv4.MessageTypeDiscover && k.checker != nil {
			select {
			case checks <- struct{}{}:
			default:
				s.h.stats.busy.Add(1)
				continue
			}
			workers.Add(1)
			go func() {
				defer workers.Done()
				defer func() { <-checks }()
				s.deliver(k, s.h.handleMsg(ctx, m, unicast))
			}()
			continue
		}
		s.deliver(k, s.h.handleMsg(ctx, m, unicast))
	}
}

type pendingReply struct {
	k *sockets
	r *reply
}

// deliver sends r now, or once the lease file holds the change it
// acknowledges (see commit).
func (s *Server) deliver(k *sockets, r *reply) {
	if r == nil {
		return
	}
	if r.gen == 0 || s.spec.StateDir == "" {
		s.send(k, r)
		return
	}
	s.commitMu.Lock()
	s.pending = append(s.pending, pendingReply{k, r})
	s.commitMu.Unlock()
	select {
	case s.h.dirty <- struct{}{}:
	default:
	}
}

// commit writes the lease file whenever the table changed, then sends the
// ACKs that waited for it: a group commit. Every ACK still leaves only
// after the change it promises is on disk (fsynced), but a burst of
// clients costs one write per batch instead of one per client.
func (s *Server) commit(ctx context.Context) {
	var saved uint64
	save := func() {
		s.h.mu.Lock()
		recs, g := s.h.pool.records(), s.h.gen
		s.h.mu.Unlock()
		if g == saved {
			return
		}
		if err := s.h.save(recs); err != nil {
			// The ACKs still go out: a full disk must not take the LAN
			// down with it. The error shows in status.
			s.setErr(err)
			s.log.Error("dhcp: cannot write the lease file", "event", "dhcp_store_failed", "reason", err.Error())
		}
		saved = g
	}
	for {
		select {
		case <-ctx.Done():
			save()
			return
		case <-s.h.dirty:
		}
		// Replies queued before the snapshot below acknowledge changes it
		// contains: they were made before the reply was queued.
		s.commitMu.Lock()
		batch := s.pending
		s.pending = nil
		s.commitMu.Unlock()
		save()
		for _, p := range batch {
			s.send(p.k, p.r)
		}
	}
}

func (s *Server) send(k *sockets, r *reply) {
	if r == nil {
		return
	}
	if _, err := k.conn.WriteTo(r.msg.ToBytes(), nil, net.UDPAddrFromAddrPort(r.to)); err != nil {
		s.setErr(fmt.Errorf("send %s to %s: %w", r.msg.MessageType(), r.to, err))
		// Every request is answered, so a flood of them meets every
		// failure (a full socket buffer) once per packet.
		s.h.warnLAN("dhcp_send_failed", "dhcp: cannot send reply", "iface", s.spec.Interface, "reason", err.Error())
	}
}

// Status returns a snapshot for `uplinkd status`.
func (s *Server) Status() Status {
	st := Status{Mode: s.spec.Mode, Interface: s.spec.Interface}
	s.mu.Lock()
	st.Listening, st.Binds, st.LastError, st.LastErrorAt = s.bound, s.binds, s.lastErr, s.lastErrAt
	s.mu.Unlock()
	if s.sup != nil {
		st.Restarts, st.LastRestart, st.LastError, st.LastErrorAt = s.sup.status()
		return st
	}
	h := s.h
	h.mu.Lock()
	now := h.now()
	st.InUse, st.Free, st.Bad = h.pool.counts(now)
	st.Leases = h.pool.snapshot(now)
	st.StaticHosts = len(h.pool.static)
	h.mu.Unlock()
	c := &h.stats
	st.Dropped = c.malformed.Load() + c.ignored.Load() + c.busy.Load()
	st.Counters = map[string]uint64{
		"malformed": c.malformed.Load(), "ignored": c.ignored.Load(), "busy": c.busy.Load(),
		"discover": c.discovers.Load(), "offer": c.offers.Load(), "ack": c.acks.Load(), "nak": c.naks.Load(),
		"request_selecting": c.selecting.Load(), "request_init_reboot": c.initReboot.Load(),
		"request_renewing": c.renewing.Load(), "request_rebinding": c.rebinding.Load(),
		"decline": c.declines.Load(), "release": c.releases.Load(), "inform": c.informs.Load(),
		"conflict": c.conflicts.Load(), "pool_exhausted": c.noFreeAddress.Load(),
	}
	return st
}
