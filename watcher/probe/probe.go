// Package probe sends health probes out of one uplink and reports every
// answer (or its absence) as a [Result].
//
// A probe must test the uplink it belongs to, not whatever the main routing
// table currently prefers: the failed uplink is usually not the default route
// any more, and a standby uplink never is. Every probe socket is therefore
// bound to the uplink's current address ([Spec.Source]), so the source rule
// "from <address> lookup <table>" that uplinkd installs sends it through the
// uplink's own table, and to the uplink's device ([Spec.Iface],
// SO_BINDTODEVICE), so that it can never leave through another interface even
// while that rule or table is still missing.
//
// Methods:
//
//   - icmp: echo requests over one long-lived raw ICMP socket per prober
//     (falling back to an unprivileged "ping" socket when raw sockets are not
//     permitted). Replies are matched by echo identifier, sequence number,
//     payload cookie and source address; a kernel socket filter drops other
//     probers' replies before they wake this one up.
//   - tcp: a TCP handshake. Connection refused (an RST) counts as success:
//     it can only come back if the packet crossed the uplink and the target
//     host answered, which is all an uplink check asks. Choose dns or http to
//     check a service rather than a path.
//   - dns: a recursive query for ". IN A" over UDP. Any DNS response with the
//     query's ID, whatever its rcode (REFUSED, SERVFAIL...), is a success: it
//     crossed the uplink both ways. An ICMP port unreachable is a failure,
//     since the configured target is meant to be a DNS server.
//   - http: GET without following redirects; 2xx and 3xx are successes.
//     Each GET runs in uplinkd-helper (package httpprobe), one process per
//     probe, so that the daemon links no HTTP or TLS client.
//
// A prober follows no address changes by itself: its sockets are bound to
// the address it was started with. When the uplink's address changes the
// caller cancels [Run] and starts it again with the new Source (a ppp redial
// gives a new address; probes from the old one would fail or, worse, leave
// through a different table).
package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Probe methods (the values of [Spec.Method], as in the config's
// uplink.check.method).
const (
	MethodICMP = "icmp"
	MethodTCP  = "tcp"
	MethodDNS  = "dns"
	MethodHTTP = "http"
)

// Spec says what one prober sends, where from and how often.
type Spec struct {
	// Uplink names the uplink; it is copied into every Result.
	Uplink string
	// Method is icmp, tcp, dns or http.
	Method string
	// Targets as the config loader validates them: icmp an IPv4 or IPv6
	// address (all of one family: ICMPv6 for IPv6); tcp
	// HOST:PORT; dns IP or IP:PORT (default port 53); http an http:// or
	// https:// URL. Host names are resolved by the system resolver before
	// every probe, not through the uplink (the local resolver may well sit
	// on the LAN or on 127.0.0.53, which a socket bound to the uplink cannot
	// reach).
	Targets []string
	// Interval between rounds; each round probes every target once.
	Interval time.Duration
	// Timeout of one probe. It is capped at Interval so that rounds never
	// overlap: a consumer can then treat a round as complete once it has
	// one result per target.
	Timeout time.Duration
	// Source is the uplink's current address; every probe socket is bound
	// to it. The zero Addr leaves the choice to the kernel (only the device
	// binding applies).
	Source netip.Addr
	// Iface is the uplink's device (SO_BINDTODEVICE); empty: no device
	// binding.
	Iface string
	// NetNS is a network namespace file descriptor to open the sockets in;
	// <= 0 means the caller's namespace (netnsx's convention). Only socket
	// creation happens there.
	NetNS int
	// Retries is how many more probes a round may send to a target that
	// has not answered yet (0: one probe per target and round). See
	// retryAfter for their spacing; all of them end with the round's
	// Timeout, and the first answer is the target's result.
	Retries int
}

// Result is the outcome of one probe to one target.
type Result struct {
	Uplink string
	Target string
	OK     bool
	// RTT is the round-trip time of a successful probe: echo to reply for
	// icmp, the handshake for tcp, query to response for dns, request to
	// response headers for http. Zero when !OK.
	RTT time.Duration
	// Err says why the probe failed ("timeout after 800ms", "connect:
	// network is unreachable", "HTTP 503"...); empty when OK.
	Err string
	// At is when the round this probe belongs to started.
	At time.Time
	// Round numbers the rounds of one Run from 1. All results of a round
	// share Round and At, and a round has exactly one result per target.
	Round uint64
	// Sent is how many probes went to the target in this round (1 plus
	// the retries sent); Sent-1 of them are lost when OK, Sent when not.
	Sent int
}

// prober sends one probe of its method to one target.
type prober interface {
	probe(ctx context.Context, t *target, timeout time.Duration) (time.Duration, error)
	close() error
}

// target is a Spec target parsed once.
type target struct {
	raw  string
	addr netip.Addr // icmp, dns
	port uint16     // dns
	host string     // tcp: host part of host:port
	hp   string     // tcp: host:port
	url  *url.URL   // http

	// recent holds the target's last answered RTTs (a ring), for the
	// spacing of retries. Rounds of one target do not overlap (timeout <=
	// interval), but a round's goroutine may still be ending as the next
	// one starts: mu guards it.
	mu     sync.Mutex
	recent [recentRTTs]time.Duration
	next   int
}

// recentRTTs is how many of a target's last RTTs set its retry spacing.
const recentRTTs = 5

// Retry spacing (retryAfter): four times the slowest recent RTT, as TCP's
// retransmission timeout is four deviations above its mean, and at least
// minRetryAfter, so that a fast line sends no retry for an answer that is
// merely a scheduling delay away.
const (
	retryRTTFactor = 4
	minRetryAfter  = 200 * time.Millisecond
)

// noteRTT records an answer's RTT for the retry spacing.
func (t *target) noteRTT(rtt time.Duration) {
	t.mu.Lock()
	t.recent[t.next] = rtt
	t.next = (t.next + 1) % len(t.recent)
	t.mu.Unlock()
}

// retryAfter is how long a round waits for the target's answer before it
// sends the next probe: retryRTTFactor × the slowest of its recent RTTs,
// at least minRetryAfter; with no answer on record (the first rounds, or a
// target that has not answered for a while), the timeout split evenly over
// the probes. A slow line (bufferbloat) therefore gets fewer retries, not
// spurious ones: its RTT history spaces them out beyond the timeout.
func (t *target) retryAfter(timeout time.Duration, retries int) time.Duration {
	t.mu.Lock()
	var slowest time.Duration
	for _, r := range t.recent {
		slowest = max(slowest, r)
	}
	t.mu.Unlock()
	if slowest == 0 {
		return timeout / time.Duration(retries+1)
	}
	return max(retryRTTFactor*slowest, minRetryAfter)
}

// probeTarget sends t's probes of one round: one at once, then, while none
// has answered, up to retries more, one every retryAfter, as long as the
// round's timeout has not run out. The first answer is the result (its RTT
// measured from its own probe); a definite failure (refused, HTTP 503, an
// ICMP error) ends the round for t at once, as it did without retries. It
// returns how many probes it sent.
func probeTarget(ctx context.Context, p prober, t *target, timeout time.Duration, retries int) (time.Duration, int, error) {
	if retries <= 0 {
		rtt, err := p.probe(ctx, t, timeout)
		return rtt, 1, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		rtt time.Duration
		err error
	}
	answers := make(chan answer, retries+1)
	start := time.Now()
	sent, pending := 0, 0
	send := func(left time.Duration) {
		sent++
		pending++
		go func() {
			rtt, err := p.probe(ctx, t, left)
			answers <- answer{rtt, err}
		}()
	}
	// Every probe sent is waited for before returning: the prober's
	// socket outlives them (Run's WaitGroup covers this goroutine only).
	defer func() {
		cancel()
		for ; pending > 0; pending-- {
			<-answers
		}
	}()
	send(timeout)
	after := t.retryAfter(timeout, retries)
	retry := time.NewTimer(after)
	defer retry.Stop()
	for {
		select {
		case a := <-answers:
			pending--
			if a.err == nil {
				return a.rtt, sent, nil
			}
			var unanswered timeoutError
			if !errors.As(a.err, &unanswered) || ctx.Err() != nil {
				return 0, sent, a.err
			}
			if pending == 0 {
				// The round's timeout has run out for the last probe
				// sent: no retry could be answered in time either.
				return 0, sent, errTimeout(timeout)
			}
		case <-retry.C:
			left := timeout - time.Since(start)
			if sent > retries || left <= 0 {
				continue
			}
			send(left)
			retry.Reset(after)
		}
	}
}

// Run probes s.Targets once per s.Interval, starting at once, every target of
// a round concurrently, and sends each result to out until ctx is done.
//
// Sends to out block (give it room for a few rounds); a result is never
// dropped, but a slow consumer delays the prober. Probes cut short by ctx are
// not reported, and nothing is sent to out after Run returns.
//
// Run returns nil when ctx is done. It returns an error, without sending
// anything, when s is invalid or the probe socket cannot be opened (no
// privilege for ICMP, a bad NetNS fd, a Source that is not local...).
func Run(ctx context.Context, s Spec, out chan<- Result) error {
	if out == nil {
		return errors.New("probe: nil result channel")
	}
	targets, err := s.parse()
	if err != nil {
		return fmt.Errorf("probe %s: %w", s.Uplink, err)
	}
	p, err := newProber(s, is6(s, targets))
	if err != nil {
		return fmt.Errorf("probe %s: %s: %w", s.Uplink, s.Method, err)
	}
	defer p.close()
	timeout := min(s.Timeout, s.Interval)

	var wg sync.WaitGroup
	// Runs before p.close (defers are LIFO): the icmp reader must outlive
	// every probe waiting for it.
	defer wg.Wait()
	tick := time.NewTicker(s.Interval)
	defer tick.Stop()
	for round := uint64(1); ; round++ {
		at := time.Now()
		for _, t := range targets {
			wg.Go(func() {
				rtt, sent, err := probeTarget(ctx, p, t, timeout, s.Retries)
				if ctx.Err() != nil {
					return // cut short by shutdown: says nothing about the uplink
				}
				r := Result{Uplink: s.Uplink, Target: t.raw, OK: err == nil, RTT: rtt, At: at, Round: round, Sent: sent}
				if err != nil {
					r.RTT, r.Err = 0, err.Error()
				} else {
					t.noteRTT(rtt)
				}
				select {
				case out <- r:
				case <-ctx.Done():
				}
			})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// is6 tells an IPv6 prober: its source, or else its first target, is IPv6
// (parse has checked that every target has the source's family).
func is6(s Spec, targets []*target) bool {
	if s.Source.IsValid() {
		return s.Source.Is6()
	}
	return len(targets) > 0 && targets[0].addr.Is6()
}

func newProber(s Spec, v6 bool) (prober, error) {
	switch s.Method {
	case MethodICMP:
		return newICMP(s, v6)
	case MethodTCP:
		return &tcpProber{d: newDialer(s)}, nil
	case MethodDNS:
		return &dnsProber{d: newDialer(s)}, nil
	case MethodHTTP:
		return &httpProber{d: newDialer(s)}, nil
	}
	return nil, fmt.Errorf("unknown method %q", s.Method)
}

// parse validates s and its targets.
func (s *Spec) parse() ([]*target, error) {
	if s.Interval <= 0 {
		return nil, fmt.Errorf("interval must be positive (got %s)", s.Interval)
	}
	if s.Timeout <= 0 {
		return nil, fmt.Errorf("timeout must be positive (got %s)", s.Timeout)
	}
	if len(s.Targets) == 0 {
		return nil, errors.New("no targets")
	}
	if s.Source.IsValid() && s.Source.Zone() != "" {
		return nil, fmt.Errorf("source %s: zones are not supported", s.Source)
	}
	out := make([]*target, 0, len(s.Targets))
	for _, raw := range s.Targets {
		t, err := parseTarget(s.Method, raw)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", raw, err)
		}
		if t.addr.IsValid() && s.Source.IsValid() && t.addr.Is4() != s.Source.Is4() {
			return nil, fmt.Errorf("target %q: address family differs from source %s", raw, s.Source)
		}
		if s.Method == MethodICMP && len(out) > 0 && t.addr.Is4() != out[0].addr.Is4() {
			// One socket per prober: one family.
			return nil, fmt.Errorf("target %q: icmp targets of one prober must be of one family", raw)
		}
		out = append(out, t)
	}
	return out, nil
}

func parseTarget(method, raw string) (*target, error) {
	t := &target{raw: raw}
	switch method {
	case MethodICMP:
		a, err := netip.ParseAddr(raw)
		if err != nil || a.Is4In6() || a.Zone() != "" {
			return nil, errors.New("icmp needs an IPv4 or IPv6 address")
		}
		t.addr = a
	case MethodTCP:
		host, port, err := net.SplitHostPort(raw)
		if err != nil {
			return nil, fmt.Errorf("tcp needs HOST:PORT: %w", err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("bad port %q", port)
		}
		t.host, t.hp = host, raw
		if a, err := netip.ParseAddr(host); err == nil {
			t.addr = a
		}
	case MethodDNS:
		if ap, err := netip.ParseAddrPort(raw); err == nil {
			t.addr, t.port = ap.Addr(), ap.Port()
		} else if a, err := netip.ParseAddr(raw); err == nil {
			t.addr, t.port = a, 53
		} else {
			return nil, errors.New("dns needs IP or IP:PORT")
		}
		if t.port == 0 {
			return nil, errors.New("port 0")
		}
	case MethodHTTP:
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("http needs a URL: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("http needs an http:// or https:// URL")
		}
		t.url = u
	default:
		return nil, fmt.Errorf("unknown method %q", method)
	}
	return t, nil
}

// errTimeout is what a probe without an answer in time reports: a
// timeoutError, which probeTarget tells from a definite failure.
func errTimeout(d time.Duration) error { return timeoutError{d} }

// timeoutError is a probe that got no answer within its timeout.
type timeoutError struct{ timeout time.Duration }

func (e timeoutError) Error() string { return "timeout after " + e.timeout.String() }

// IsTimeout reports whether err is the probe's own deadline expiring. The
// deadline a net.Dialer derives from ctx can fire an instant before ctx's
// own timer, so an i/o timeout counts as well.
func IsTimeout(ctx context.Context, err error) bool {
	var ne net.Error
	return errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// BindDevice is a net.Dialer/ListenConfig Control hook that binds the socket
// to iface before bind(2) and connect(2), so that the kernel's route lookup
// for it is restricted to that device.
func BindDevice(iface string, noPort bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if iface != "" {
				if err := unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface); err != nil {
					serr = fmt.Errorf("bind to device %s: %w", iface, err)
					return
				}
			}
			if noPort {
				// Binding to Source with port 0 would reserve an ephemeral
				// port at bind(2) time, for any destination; one probe per
				// second per target would then eat into the port range.
				// With this option the port is picked at connect(2), per
				// destination, like an unbound socket's.
				if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
					serr = fmt.Errorf("set IP_BIND_ADDRESS_NO_PORT: %w", err)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}
