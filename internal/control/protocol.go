package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/uplinkd/uplinkd/internal/delegstate"
)

// Version is the protocol and status schema version this package speaks.
const Version = 1

// Commands a Request can carry.
const (
	CmdStatus    = "status"
	CmdReconnect = "reconnect"
	CmdReload    = "reload"
	CmdEvent     = "event"
	CmdDrain     = "drain"
	CmdUndrain   = "undrain"
)

// Request is what a client sends: one JSON object per connection.
type Request struct {
	V      int    `json:"v"`
	Cmd    string `json:"cmd"`
	Uplink string `json:"uplink,omitempty"` // reconnect, drain, undrain
	Event  *Event `json:"event,omitempty"`  // event
	// Force: drain even the last uplink that carries the default route.
	Force bool `json:"force,omitempty"`
}

// Caller is who sent a request, from the kernel (SO_PEERCRED), never from
// anything the client says: what the daemon logs for a request that changes
// what it does.
type Caller struct {
	UID uint32
	PID int32
}

// Drain is a drain or undrain request as the Handler gets it.
type Drain struct {
	Uplink string
	// Undrain: put the uplink back; otherwise take it out.
	Undrain bool
	// Force: drain even the last uplink that carries the default route.
	Force  bool
	Caller Caller
}

// Response is the daemon's one answer. OK false carries Error and, for a
// reload of a bad file, the file's Problems.
type Response struct {
	V        int      `json:"v"`
	OK       bool     `json:"ok"`
	Error    string   `json:"error,omitempty"`
	Status   *Status  `json:"status,omitempty"`
	Problems []string `json:"problems,omitempty"`
	// Busy marks the answer to a connection that found no free slot
	// (Error is BusyMessage): nothing was done, and a retry may succeed.
	Busy bool `json:"busy,omitempty"`
	// Unread marks the answer to a request the daemon could not read
	// whole (not complete within the request deadline, too large, not
	// JSON): nothing was done. A client that must know whether its request
	// took effect (event --role) reads it like Busy, not like a refusal.
	Unread bool `json:"unread,omitempty"`
}

// LinkState is what a hook script says about an interface.
type LinkState string

// Link states an event can carry.
const (
	LinkUp   LinkState = "up"
	LinkDown LinkState = "down"
)

// Role is a VRRP role reported by keepalived's notify script.
type Role string

// Roles an event can carry.
const (
	RoleMaster Role = "master"
	RoleBackup Role = "backup"
	RoleFault  Role = "fault"
)

// Event is a poke from a hook script: either an interface changed (Iface and
// State, with the addresses pppd knows) or this gateway's HA role changed
// (Role alone). It is only a trigger: the daemon re-reads the interface from
// netlink, which stays the truth.
type Event struct {
	Iface  string     `json:"iface,omitempty"`
	State  LinkState  `json:"state,omitempty"`
	Local  netip.Addr `json:"local,omitzero"`
	Remote netip.Addr `json:"remote,omitzero"`
	Role   Role       `json:"role,omitempty"`
	// Delegated is an IPv6 prefix delegated to Iface (DHCPv6-PD), or
	// DelegatedNone when the delegation ended; with Iface alone. Unlike
	// the other interface events it is not a trigger only: the daemon
	// keeps it (docs/ipv6.md). The lifetimes are in seconds, nil when not
	// told (infinite), 0xffffffff infinite.
	Delegated         string  `json:"delegated,omitempty"`
	PreferredLifetime *uint32 `json:"preferred_lifetime,omitempty"`
	ValidLifetime     *uint32 `json:"valid_lifetime,omitempty"`
}

// DelegatedNone is the Delegated of an event that ends a delegation.
const DelegatedNone = "none"

// DelegatedPrefix is the event's delegated prefix; invalid for
// DelegatedNone (and for an event that carries none).
func (e Event) DelegatedPrefix() netip.Prefix {
	p, _ := netip.ParsePrefix(e.Delegated)
	return p
}

// Validate reports the first thing wrong with e; both the command line and
// the server call it, so the daemon never sees an invalid event.
func (e Event) Validate() error {
	if e.Role != "" {
		switch e.Role {
		case RoleMaster, RoleBackup, RoleFault:
		default:
			return fmt.Errorf("role %q: want master, backup or fault", e.Role)
		}
		if e.Iface != "" || e.State != "" || e.Local.IsValid() || e.Remote.IsValid() || e.Delegated != "" {
			return errors.New("a role event carries the role alone")
		}
		return nil
	}
	if e.Iface == "" {
		return errors.New("an event needs an interface (and a state) or a role")
	}
	if len(e.Iface) > 15 {
		return fmt.Errorf("interface name %q: longer than 15 bytes", e.Iface)
	}
	if e.Delegated != "" {
		return e.validateDelegated()
	}
	if e.PreferredLifetime != nil || e.ValidLifetime != nil {
		return errors.New("lifetimes come with a delegated prefix only")
	}
	switch e.State {
	case LinkUp, LinkDown:
	case "":
		return fmt.Errorf("interface %s: the event needs a state (up or down)", e.Iface)
	default:
		return fmt.Errorf("state %q: want up or down", e.State)
	}
	return nil
}

// validateDelegated checks a delegation event: the interface and the
// prefix (or none) alone, a prefix uplinkd can route to a LAN, lifetimes
// that make sense.
func (e Event) validateDelegated() error {
	if e.State != "" || e.Local.IsValid() || e.Remote.IsValid() {
		return errors.New("a delegation event carries the interface and the prefix alone (no state or addresses)")
	}
	if e.Delegated == DelegatedNone {
		if e.PreferredLifetime != nil || e.ValidLifetime != nil {
			return errors.New("delegated none: no lifetimes")
		}
		return nil
	}
	p, err := netip.ParsePrefix(e.Delegated)
	if err != nil {
		return fmt.Errorf("delegated %q: want an IPv6 prefix such as 2001:db8:a::/56, or none", e.Delegated)
	}
	if err := delegstate.CheckPrefix(p); err != nil {
		return err
	}
	if e.PreferredLifetime != nil && e.ValidLifetime != nil && *e.PreferredLifetime > *e.ValidLifetime {
		return fmt.Errorf("preferred lifetime %d s is longer than the valid lifetime %d s", *e.PreferredLifetime, *e.ValidLifetime)
	}
	return nil
}

// validate checks a decoded request before the handler sees it.
func (r *Request) validate() error {
	if r.V != Version {
		return fmt.Errorf("protocol version %d not supported (this daemon speaks %d)", r.V, Version)
	}
	switch r.Cmd {
	case CmdStatus, CmdReload:
	case CmdReconnect, CmdDrain, CmdUndrain:
		if r.Uplink == "" {
			return fmt.Errorf("%s: no uplink named", r.Cmd)
		}
	case CmdEvent:
		if r.Event == nil {
			return errors.New("event: no event in the request")
		}
		if err := r.Event.Validate(); err != nil {
			return fmt.Errorf("event: %w", err)
		}
	case "":
		return errors.New("no command in the request")
	default:
		return fmt.Errorf("unknown command %q", r.Cmd)
	}
	return nil
}

// RemoteError is the daemon's answer to a request it refused or that
// failed; transport errors (no daemon, timeout) are not RemoteErrors.
type RemoteError struct {
	Msg      string
	Problems []string
	// Busy: the daemon had no free connection slot and did nothing; a
	// retry may succeed.
	Busy bool
	// Unread: the daemon could not read the whole request and did nothing.
	Unread bool
}

func (e *RemoteError) Error() string { return e.Msg }

// errTooLarge ends the read of a request over MaxRequest.
var errTooLarge = errors.New("request too large")

type limitReader struct {
	r io.Reader
	n int
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		// At the limit: the request is too large only if there is more
		// (a request of exactly the limit that ends here is judged as it
		// is; found by FuzzControlRequest).
		var one [1]byte
		if n, err := l.r.Read(one[:]); n == 0 && err != nil {
			return 0, err
		}
		return 0, errTooLarge
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// readRequest reads the one request of a connection: a JSON object of at
// most max bytes. A timeout of r is returned as it is (a net.Error); every
// other error says what was wrong with the request and goes to the client.
// The request is not validated yet (Request.validate).
func readRequest(r io.Reader, max int) (Request, error) {
	var req Request
	dec := json.NewDecoder(&limitReader{r: r, n: max})
	err := dec.Decode(&req)
	if err == nil {
		return req, nil
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return req, err
	case errors.Is(err, errTooLarge):
		return req, fmt.Errorf("request larger than %d bytes", max)
	case errors.Is(err, io.EOF):
		return req, errors.New("empty request")
	}
	return req, fmt.Errorf("malformed request: %w", err)
}
