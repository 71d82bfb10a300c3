package dhcpd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Modes of [Spec.Mode] (the config's lan.dhcp.mode). "off" never reaches
// this package: the daemon simply does not create a Server.
const (
	ModeEmbedded = "embedded"
	ModeService  = "service"
)

// Defaults applied by [New] to zero fields.
const (
	DefaultLease    = time.Hour
	DefaultMaxLease = 24 * time.Hour
	// DefaultRestartInterval is the least time between two restarts of the
	// supervised service (mode service).
	DefaultRestartInterval = 10 * time.Second
)

// Host is a fixed address for one MAC. Name, if set, is sent to the host as
// its hostname (option 12).
type Host struct {
	Name string
	MAC  net.HardwareAddr
	IP   netip.Addr
}

// Service says what to restart in mode service: a systemd unit (`systemctl restart`)
// or a command (argv, run without a shell). Exactly one is set.
type Service struct {
	Unit    string   // e.g. "isc-dhcp-server.service"
	Command []string // e.g. ["/usr/sbin/service", "isc-dhcp-server", "restart"]
	// MinInterval is the least time between two restarts; a LAN link that
	// flaps faster gets one restart when it settles. Zero: DefaultRestartInterval.
	MinInterval time.Duration
}

// Spec is the typed DHCP configuration. The daemon builds it from
// `[lan.dhcp]`, `[lan] interface` and `[daemon] state_dir`.
type Spec struct {
	Mode      string // ModeEmbedded or ModeService
	Interface string // the LAN interface

	// ServerIP is the LAN interface's address (server identifier, default
	// router and the source of replies) and Network its subnet. When
	// ServerIP is not valid both are read from the interface each time the
	// socket is bound.
	ServerIP netip.Addr
	Network  netip.Prefix

	Range    [2]netip.Addr // first and last pool address, inclusive
	Lease    time.Duration // granted when the client asks for nothing; 0: DefaultLease
	MaxLease time.Duration // the most a client may ask for; 0: DefaultMaxLease

	Router []netip.Addr // option 3; empty: ServerIP
	DNS    []netip.Addr // option 6; empty: no option
	Domain string       // option 15; empty: no option
	NTP    []netip.Addr // option 42; empty: no option

	Hosts []Host

	// StateDir holds the lease file (dhcp-leases.json). Empty: leases are
	// kept in memory only (tests, benchmarks).
	StateDir string

	// ConflictCheck makes the server check that a pool address is unused
	// before it offers it to a client for the first time (see conflict.go).
	ConflictCheck bool
	// ConflictTimeout is how long the check waits; 0: 500 ms.
	ConflictTimeout time.Duration

	Service Service // mode service only

	// NetNS is a network namespace fd in which sockets are opened (tests run
	// the server inside a lab namespace); 0 or negative: the caller's own.
	// Not a config key.
	NetNS int
}

const defaultConflictTimeout = 500 * time.Millisecond

// withDefaults returns s with zero durations replaced and checks the
// combination. The loader already rejects bad values with their position;
// these checks guard the package's own invariants.
func (s Spec) withDefaults() (Spec, error) {
	if s.Lease == 0 {
		s.Lease = DefaultLease
	}
	if s.MaxLease == 0 {
		s.MaxLease = DefaultMaxLease
	}
	if s.MaxLease < s.Lease {
		s.MaxLease = s.Lease
	}
	if s.ConflictTimeout == 0 {
		s.ConflictTimeout = defaultConflictTimeout
	}
	if s.Service.MinInterval == 0 {
		s.Service.MinInterval = DefaultRestartInterval
	}
	if s.Interface == "" {
		return s, errors.New("dhcp: no LAN interface")
	}
	switch s.Mode {
	case ModeService:
		if (s.Service.Unit == "") == (len(s.Service.Command) == 0) {
			return s, errors.New("dhcp: mode service needs exactly one of a unit or a command")
		}
		return s, nil
	case ModeEmbedded:
	default:
		return s, fmt.Errorf("dhcp: unknown mode %q", s.Mode)
	}
	if s.Lease < time.Second {
		return s, fmt.Errorf("dhcp: lease %s is shorter than a second", s.Lease)
	}
	if !s.Range[0].Is4() || !s.Range[1].Is4() || s.Range[0].Compare(s.Range[1]) > 0 {
		return s, fmt.Errorf("dhcp: bad range %s-%s", s.Range[0], s.Range[1])
	}
	if s.ServerIP.IsValid() {
		if !s.ServerIP.Is4() || !s.Network.IsValid() || !s.Network.Contains(s.ServerIP) {
			return s, fmt.Errorf("dhcp: server address %s is not in network %s", s.ServerIP, s.Network)
		}
		if err := s.checkNetwork(s.Network, s.ServerIP); err != nil {
			return s, err
		}
	}
	macs := map[string]bool{}
	for _, h := range s.Hosts {
		if len(h.MAC) != 6 || !h.IP.Is4() {
			return s, fmt.Errorf("dhcp: host %q: needs an ethernet MAC and an IPv4 address", h.Name)
		}
		if macs[h.MAC.String()] {
			return s, fmt.Errorf("dhcp: host %q: mac %s used twice", h.Name, h.MAC)
		}
		macs[h.MAC.String()] = true
		if strings.ContainsAny(h.Name, "\x00") {
			return s, fmt.Errorf("dhcp: host %q: bad name", h.Name)
		}
	}
	return s, nil
}

// checkNetwork checks that the pool and the fixed addresses lie in the LAN
// subnet and that no fixed address is the server's own or the subnet's
// network or broadcast address; it runs again whenever the address is read
// from the interface.
func (s Spec) checkNetwork(n netip.Prefix, server netip.Addr) error {
	if !n.Contains(s.Range[0]) || !n.Contains(s.Range[1]) {
		return fmt.Errorf("dhcp: range %s-%s is not inside the LAN network %s", s.Range[0], s.Range[1], n)
	}
	for _, h := range s.Hosts {
		switch {
		case !n.Contains(h.IP):
			return fmt.Errorf("dhcp: host %q: %s is not inside the LAN network %s", h.Name, h.IP, n)
		case h.IP == server:
			return fmt.Errorf("dhcp: host %q: %s is the LAN interface's own address", h.Name, h.IP)
		case n.Bits() < 31 && (h.IP == n.Masked().Addr() || h.IP == broadcastOf(n)):
			return fmt.Errorf("dhcp: host %q: %s is the network or broadcast address of %s", h.Name, h.IP, n)
		}
	}
	return nil
}
