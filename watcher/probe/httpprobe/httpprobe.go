// Package httpprobe is the http health probe: one GET through an uplink,
// timed from the start of the connection to the response headers. It runs
// in uplinkd-helper, not in the daemon, which starts one helper per probe
// (watcher/probe's http method), so that the daemon links neither net/http
// nor TLS (internal/helper says why).
package httpprobe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// Request is one probe.
type Request struct {
	URL string
	// Connect is where to connect: the URL's host, resolved by the daemon
	// in its own namespace through the system resolver (probe.Spec's
	// Targets say why). The URL's host still names the server (Host
	// header, TLS server name).
	Connect netip.AddrPort
	Source  netip.Addr // bind to this address; invalid: the kernel's choice
	Iface   string     // bind to this device (SO_BINDTODEVICE); "": none
	// NetNS is a descriptor of the namespace to connect in (the
	// uplink's); netnsx.Own: the helper's own.
	NetNS   int
	Timeout time.Duration
}

// ErrTimeout is a probe that got no response headers within its timeout.
var ErrTimeout = errors.New("timeout")

// maxBody is how much of a response body is read before the connection is
// dropped: enough for a typical status page, bounded so that a target
// serving something big cannot make probes expensive.
const maxBody = 64 << 10

// Get GETs r.URL without following redirects; 2xx and 3xx are successes.
// It returns the time from the start of the connection to the response
// headers.
func Get(ctx context.Context, r Request) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	nd := net.Dialer{Control: probe.BindDevice(r.Iface, r.Source.IsValid())}
	if r.Source.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: r.Source.AsSlice()}
	}
	network := "tcp4"
	if r.Connect.Addr().Is6() {
		network = "tcp6"
	}
	tr := &http.Transport{
		// Never through a proxy from the environment: the probe is about
		// this uplink's path to the target.
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// Only the socket is made in the uplink's namespace; it
			// stays there for the rest of the request.
			var c net.Conn
			err := netnsx.Do(r.NetNS, func() (err error) {
				c, err = nd.DialContext(ctx, network, r.Connect.String())
				return err
			})
			return c, err
		},
		// One connection per probe, and one probe per process: a
		// kept-alive connection could only hide that new ones no longer
		// get through.
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxBody,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// 3xx counts as success: following it would probe another target.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("User-Agent", "uplinkd-probe")
	start := time.Now()
	resp, err := client.Do(req)
	rtt := time.Since(start)
	if err != nil {
		if probe.IsTimeout(ctx, err) {
			return 0, ErrTimeout
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
