package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"

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
	nd := net.Dialer{Control: bindDevice(d.iface, network == "tcp" && d.src.IsValid())}
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
		if isTimeout(ctx, err) {
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

// httpProber GETs a URL through a transport that dials from the uplink.
type httpProber struct {
	d      *dialer
	client *http.Client
}

// maxBody is how much of a response body is read before the connection is
// dropped: enough for a typical status page, bounded so that a target
// serving something big cannot make probes expensive.
const maxBody = 64 << 10

func newHTTP(s Spec) *httpProber {
	p := &httpProber{d: newDialer(s)}
	tr := &http.Transport{
		// Never through a proxy from the environment: the probe is about
		// this uplink's path to the target.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("dial %s: %w", addr, err)
			}
			dst, err := p.d.resolveHostPort(ctx, host, addr)
			if err != nil {
				return nil, err
			}
			c, _, err := p.d.dial(ctx, "tcp", dst)
			return c, err
		},
		// A fresh connection per probe: a kept-alive one could hide that
		// new connections no longer get through, and would tie the probe
		// to an old source address.
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxBody,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
	}
	p.client = &http.Client{
		Transport: tr,
		// 3xx counts as success: following it would probe another target.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p
}

func (p *httpProber) probe(ctx context.Context, t *target, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url.String(), nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("User-Agent", "uplinkd-probe")
	start := time.Now()
	resp, err := p.client.Do(req)
	rtt := time.Since(start)
	if err != nil {
		if isTimeout(ctx, err) {
			return 0, errTimeout(timeout)
		}
		return 0, fmt.Errorf("GET: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return 0, fmt.Errorf("HTTP %s", resp.Status)
	}
	return rtt, nil
}

func (p *httpProber) close() error {
	p.client.CloseIdleConnections()
	return nil
}

func (p *tcpProber) close() error { return nil }
