package publish

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/uplinkd/uplinkd/internal/backoff"
)

// Kind is the kind of a publisher.
type Kind string

// The publisher kinds of [[uplink.publish]] kind = "...".
const (
	KindCommand Kind = "command"
	KindDynDNS2 Kind = "dyndns2"
	KindRFC2136 Kind = "rfc2136"
)

// Defaults of [[uplink.publish]], for the config loader. The manager takes a
// Spec's durations as they are (Settle, MinInterval and Refresh 0 mean
// none), except Timeout and TTL, where 0 means the default.
const (
	DefaultSettle      = 2 * time.Second
	DefaultMinInterval = 30 * time.Second
	DefaultRefresh     = 600 * time.Hour // 25 days, like ddclient and inadyn
	DefaultTimeout     = 10 * time.Second
	DefaultTTL         = 60 * time.Second
)

// Retry backoff after a failed publish: Backoff, doubling up to
// MaxBackoff, ±20% jitter (shared with reconnect).
const (
	Backoff    = 30 * time.Second
	MaxBackoff = 30 * time.Minute
)

// publishRetry is that schedule; a publisher counts its own failures.
var publishRetry = backoff.New(Backoff, MaxBackoff)

// Spec is one [[uplink.publish]] of one uplink, fully resolved by the
// loader. It never holds a secret itself, only the paths of the files that
// do, so it can be logged and compared freely.
type Spec struct {
	Uplink string // the uplink whose address is published
	Iface  string // its interface (UPLINKD_IFACE of a command)
	Name   string // unique within the uplink (loader default "<kind>-<n>")
	Kind   Kind

	Command []string // command: argv, run without a shell

	URL    *url.URL // dyndns2: the server, http or https, no user info
	CAFile string   // dyndns2: PEM CA(s) to verify the server with instead of the system's

	Server string // rfc2136: host:port of the primary (New adds :53)
	Zone   string // rfc2136: the zone to update
	TTL    time.Duration

	// IPv6: the publisher publishes the uplink's IPv6 address (family =
	// "ipv6"; UpdateIPv6 feeds it): a dyndns2 myipv6, an rfc2136 AAAA.
	IPv6 bool

	Hostname     string // dyndns2, rfc2136: the name whose address is set
	Username     string // dyndns2
	PasswordFile string // dyndns2: mode checked, first line is the password
	KeyFile      string // rfc2136: TSIG key in BIND format, mode checked

	Settle      time.Duration // the address must be stable this long before it is published
	MinInterval time.Duration // at least this long between two attempts
	Refresh     time.Duration // republish an unchanged address after this long; 0 = never
	Timeout     time.Duration // bounds one attempt
}

// target identifies where a spec publishes to. The state file records it,
// so that pointing a publisher at another name or server publishes again
// even though the address did not change.
func (s Spec) target() string {
	u := ""
	if s.URL != nil {
		u = s.URL.String()
	}
	fields := []string{string(s.Kind), u, s.Server, s.Zone, s.Hostname, s.Username}
	if s.IPv6 {
		// Only then: an IPv4 publisher keeps the target (and the state
		// file's verdict) it had before publishers had a family.
		fields = append(fields, "ipv6")
	}
	h := sha256.Sum256([]byte(strings.Join(append(fields, s.Command...), "\x00")))
	return hex.EncodeToString(h[:8])
}

// Request is what one publish is about.
type Request struct {
	Addr     netip.Addr // the address to publish
	Previous netip.Addr // the address published before, if any (UPLINKD_OLD_IP)
}

// Publisher publishes an address once. Implementations are safe for use by
// one goroutine at a time; the manager never runs two publishes of the same
// publisher at once.
type Publisher interface {
	Publish(ctx context.Context, req Request) Result
}

// Outcome says what the manager should do after an attempt.
type Outcome int

// Outcomes of an attempt.
const (
	OK        Outcome = iota // published (or already so)
	Retry                    // temporary: retry with backoff
	Permanent                // do not retry until the config changes
)

// String is the UPLINKD_RESULT / log `result` value.
func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Retry:
		return "retry"
	default:
		return "permanent"
	}
}

// Result is the outcome of one attempt.
type Result struct {
	Outcome Outcome
	Reply   string // the server's answer: "good", "nochg", "badauth", "NOERROR", "REFUSED", "exit 3", ...
	Err     error  // why it failed; never contains a secret
}

// PublisherOptions are what publishers need besides their spec.
type PublisherOptions struct {
	Log     *slog.Logger // nil: slog.Default()
	Version string       // User-Agent "uplinkd/<Version>" of dyndns2 requests
	// Dial, if set, opens the connections of dyndns2 and rfc2136 (network
	// "tcp" or "udp") when they run in-process (remote.New): how tests
	// reach servers inside network namespaces. New refuses it: a helper
	// process cannot call it. nil: net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// WithDefaults is s with a zero Timeout and TTL set to their defaults.
func (s Spec) WithDefaults() Spec {
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.TTL <= 0 {
		s.TTL = DefaultTTL
	}
	return s
}

// New checks spec (secret files are read and their mode checked
// now, so that a bad file is reported at load) and returns its Publisher.
func New(spec Spec, opts PublisherOptions) (Publisher, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	spec = spec.WithDefaults()
	switch spec.Kind {
	case KindCommand:
		return newCommandPublisher(spec, opts)
	case KindDynDNS2, KindRFC2136:
		// The protocol code lives in uplinkd-helper (publish/remote),
		// which checks the spec now and publishes on each attempt.
		return newHelperPublisher(spec, opts)
	default:
		return nil, fmt.Errorf("unknown publisher kind %q", spec.Kind)
	}
}
