package remote

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/uplinkd/uplinkd/publish"
)

// dynDNS2 speaks the dyndns2 protocol (DynDNS, No-IP, Dynu, deSEC, most
// routers' "custom" provider): GET <server>/nic/update?hostname=H&myip=A
// with HTTP basic auth, answered by a line starting with a return code.
type dynDNS2 struct {
	spec      publish.Spec
	endpoint  *url.URL
	client    *http.Client
	userAgent string
}

// dyndns2 return codes that no retry can fix: the account, the name or the
// client is wrong. The manager stops the publisher until the config changes
// (retrying a bad password can get the account blocked: `abuse`).
var dyndns2Permanent = map[string]bool{
	"badauth": true, "nohost": true, "notfqdn": true, "abuse": true, "badagent": true,
	"!donator": true, "numhost": true, "!yours": true, "badsys": true, "nochg-abuse": true,
}

// Codes that say "try later": the provider's own trouble.
var dyndns2Retry = map[string]bool{"911": true, "dnserr": true}

// maxReply bounds how much of a reply is read; the answer is one short line.
const maxReply = 4096

func newDynDNS2(spec publish.Spec, opts publish.PublisherOptions) (*dynDNS2, error) {
	u := spec.URL
	if u == nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("dyndns2: server must be an http:// or https:// URL")
	}
	if u.User != nil {
		// The password belongs in password_file, not in a URL that ends
		// up in logs and status.
		return nil, errors.New("dyndns2: server URL must not contain user info; use username and password_file")
	}
	if spec.Hostname == "" {
		return nil, errors.New("dyndns2: hostname not set")
	}
	if _, err := publish.ReadPassword("password_file", spec.PasswordFile); err != nil {
		return nil, fmt.Errorf("dyndns2: %w", err)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if spec.CAFile != "" {
		pem, err := publish.ReadRegularFile("ca_file", spec.CAFile, publish.MaxCAFile, false)
		if err != nil {
			return nil, fmt.Errorf("dyndns2: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("dyndns2: ca_file %s: no PEM certificate in it", spec.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	// Each publish follows an address change, so a kept-alive connection
	// would have been made from the old address: always dial afresh.
	tr.DisableKeepAlives = true
	if opts.Dial != nil {
		tr.DialContext = opts.Dial
	}
	ua := "uplinkd/" + opts.Version
	if opts.Version == "" {
		ua = "uplinkd/dev"
	}
	return &dynDNS2{
		spec:     spec,
		endpoint: u.JoinPath("nic", "update"),
		client: &http.Client{Transport: tr, Timeout: spec.Timeout,
			CheckRedirect: sameOriginRedirect},
		userAgent: ua,
	}, nil
}

// errRedirect: the server redirected elsewhere than its own scheme, host
// and port. Following would send the Basic credentials there (Go's client
// keeps Authorization when only the scheme or port changes: HTTPS to plain
// HTTP on the same host included).
var errRedirect = errors.New("redirect to another scheme, host or port refused: the request carries credentials")

// maxRedirects bounds same-origin redirects (http.Client's own default).
const maxRedirects = 10

// sameOriginRedirect is the CheckRedirect of publishers that send
// credentials: a redirect is followed only to the same scheme, host and
// port as the request that got it.
func sameOriginRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	prev := via[len(via)-1].URL
	if req.URL.Scheme != prev.Scheme || !strings.EqualFold(hostPort(req.URL), hostPort(prev)) {
		return fmt.Errorf("%w (%s://%s to %s://%s)", errRedirect, prev.Scheme, prev.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}

// hostPort is u's host with the scheme's default port made explicit.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func (d *dynDNS2) Publish(ctx context.Context, req publish.Request) publish.Result {
	// Read at every publish: a rotated password works without a reload,
	// and a file whose mode was loosened since load is refused.
	pw, err := publish.ReadPassword("password_file", d.spec.PasswordFile)
	if err != nil {
		return publish.Result{Outcome: publish.Permanent, Err: err}
	}
	u := *d.endpoint
	// An IPv6 address goes in myipv6, the parameter dyndns2 providers
	// take for the AAAA record, never in myip: a provider that reads myip
	// as the A record would refuse it or store it wrong.
	param := "myip"
	if req.Addr.Is6() {
		param = "myipv6"
	}
	u.RawQuery = url.Values{"hostname": {d.spec.Hostname}, param: {req.Addr.String()}}.Encode()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return publish.Result{Outcome: publish.Permanent, Err: fmt.Errorf("dyndns2: %w", err)}
	}
	hreq.SetBasicAuth(d.spec.Username, pw)
	hreq.Header.Set("User-Agent", d.userAgent)
	resp, err := d.client.Do(hreq)
	if errors.Is(err, errRedirect) {
		// The server URL points somewhere that sends us elsewhere: a
		// config problem no retry fixes, and nothing was sent there.
		return publish.Result{Outcome: publish.Permanent, Err: fmt.Errorf("dyndns2 %s: %w", d.spec.Hostname, err)}
	}
	if err != nil {
		// Network errors, timeouts and certificate failures alike: the
		// server or the path to it may come back. A wrong CA stays wrong,
		// but backoff keeps that cheap and the log says why.
		return publish.Result{Outcome: publish.Retry, Err: fmt.Errorf("dyndns2: %w", err)}
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, maxReply)).ReadString('\n')
	code, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return publish.Result{Outcome: publish.Retry, Reply: resp.Status, Err: fmt.Errorf("dyndns2 %s: HTTP %s", d.spec.Hostname, resp.Status)}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		// Some servers answer a bad password with a status, not a body.
		if code == "" {
			code = "badauth"
		}
		return publish.Result{Outcome: publish.Permanent, Reply: code, Err: fmt.Errorf("dyndns2 %s: HTTP %s: %s", d.spec.Hostname, resp.Status, code)}
	case resp.StatusCode != http.StatusOK:
		return publish.Result{Outcome: publish.Permanent, Reply: resp.Status, Err: fmt.Errorf("dyndns2 %s: HTTP %s (wrong server URL?)", d.spec.Hostname, resp.Status)}
	}
	switch {
	case code == "good" || code == "nochg":
		return publish.Result{Outcome: publish.OK, Reply: code}
	case dyndns2Permanent[code]:
		return publish.Result{Outcome: publish.Permanent, Reply: code, Err: fmt.Errorf("dyndns2 %s: server says %s", d.spec.Hostname, code)}
	case dyndns2Retry[code]:
		return publish.Result{Outcome: publish.Retry, Reply: code, Err: fmt.Errorf("dyndns2 %s: server says %s (its own trouble)", d.spec.Hostname, code)}
	default:
		return publish.Result{Outcome: publish.Retry, Reply: truncate(code, 32), Err: fmt.Errorf("dyndns2 %s: unexpected reply %q", d.spec.Hostname, truncate(line, 64))}
	}
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n]
	}
	return s
}
