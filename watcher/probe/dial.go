package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uplinkd/uplinkd/internal/helper"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// dialer opens connected sockets bound to the uplink's address and device,
// inside the uplink's namespace.
type dialer struct {
	src   netip.Addr
	iface string
	netns int
}

func newDialer(s Spec) *dialer { return &dialer{src: s.Source, iface: s.Iface, netns: s.NetNS} }

// family is the IP version to resolve host names in: the source's.
func (d *dialer) family() string {
	if d.src.IsValid() && d.src.Is6() {
		return "6"
	}
	return "4"
}

// resolve turns host into an address. It runs in the caller's namespace and
// through the system resolver on purpose (see Spec.Targets); it must not run
// inside netnsx.Do, where the Go resolver's helper goroutines would end up in
// a different namespace from the calling thread.
func (d *dialer) resolve(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip"+d.family(), host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: no IPv%s address", host, d.family())
	}
	return addrs[0].Unmap(), nil
}

// dial connects to dst over network ("tcp" or "udp") from the uplink. The
// returned duration is the time connect(2) took, measured inside the
// namespace switch so that it does not include it.
func (d *dialer) dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, time.Duration, error) {
	nd := net.Dialer{Control: BindDevice(d.iface, network == "tcp" && d.src.IsValid())}
	if d.src.IsValid() {
		switch network {
		case "tcp":
			nd.LocalAddr = &net.TCPAddr{IP: d.src.AsSlice()}
		case "udp":
			nd.LocalAddr = &net.UDPAddr{IP: d.src.AsSlice()}
		}
	}
	var (
		c   net.Conn
		rtt time.Duration
	)
	err := netnsx.Do(d.netns, func() error {
		var err error
		start := time.Now()
		c, err = nd.DialContext(ctx, network+d.family(), dst.String())
		rtt = time.Since(start)
		return err
	})
	return c, rtt, err
}

// tcpProber checks that a TCP handshake (or a refusal) comes back.
type tcpProber struct{ d *dialer }

func (p *tcpProber) probe(ctx context.Context, t *target, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dst, err := p.d.resolveHostPort(ctx, t.host, t.hp)
	if err != nil {
		return 0, err
	}
	c, rtt, err := p.d.dial(ctx, "tcp", dst)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			// The RST crossed the uplink: the path works (package doc).
			return rtt, nil
		}
		if IsTimeout(ctx, err) {
			return 0, errTimeout(timeout)
		}
		return 0, fmt.Errorf("connect: %w", err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// Abort rather than close: an RST leaves no TIME_WAIT socket per
		// probe behind, here or at the target.
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	return rtt, nil
}

func (d *dialer) resolveHostPort(ctx context.Context, host, hp string) (netip.AddrPort, error) {
	_, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("target %q: %w", hp, err)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("target %q: bad port: %w", hp, err)
	}
	a, err := d.resolve(ctx, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// httpProber runs each GET in uplinkd-helper (package httpprobe), so that
// the daemon links neither net/http nor TLS (internal/helper says why).
// The host name is resolved here, in the daemon's namespace, as the other
// methods do; the helper gets the uplink's namespace, connects from there
// to that address, and reports the time to the response headers.
type httpProber struct{ d *dialer }

// helperStartMargin is added to the probe's timeout, which the helper
// enforces itself, for starting the process.
const helperStartMargin = 5 * time.Second

func (p *httpProber) probe(ctx context.Context, t *target, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+helperStartMargin)
	defer cancel()
	port := t.url.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[t.url.Scheme]
	}
	rctx, rcancel := context.WithTimeout(ctx, timeout)
	dst, err := p.d.resolveHostPort(rctx, t.url.Hostname(), net.JoinHostPort(t.url.Hostname(), port))
	rcancel()
	if err != nil {
		return 0, err
	}
	args := []string{HelperHTTP, "--connect", dst.String(), "--timeout", timeout.String()}
	if p.d.src.IsValid() {
		args = append(args, "--source", p.d.src.String())
	}
	if p.d.iface != "" {
		args = append(args, "--iface", p.d.iface)
	}
	if !netnsx.IsOwn(p.d.netns) {
		args = append(args, "--netns-fd", strconv.Itoa(helper.NetNSFD))
	}
	args = append(args, "--", t.url.String())
	out, err := helper.Run(ctx, p.d.netns, nil, args...)
	var herr *helper.Error
	switch {
	case errors.As(err, &herr) && herr.Code == helper.ExitTimeout:
		return 0, errTimeout(timeout)
	case err != nil:
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: bad answer %q", helper.Name, out)
	}
	return time.Duration(ns), nil
}

// HelperHTTP is uplinkd-helper's subcommand for one http probe:
//
//	http-probe --connect ADDR:PORT --timeout D [--source IP] [--iface IF] [--netns-fd N] -- URL
//
// It prints the time to the response headers in nanoseconds and exits 0,
// or exits helper.ExitTimeout, or helper.ExitFailed with the reason on
// stderr.
const HelperHTTP = "http-probe"

func (p *httpProber) close() error { return nil }

func (p *tcpProber) close() error { return nil }
