// Package remote holds the address publishers that talk to servers: dyndns2
// over HTTP(S) and RFC 2136 DNS UPDATE with TSIG. Only uplinkd-helper
// imports it; the daemon runs them through the helper (publish.New), so
// that its own binary links neither net/http and TLS nor miekg/dns
// (internal/helper says why). The manager, the schedule, the state files
// and the command publisher stay in package publish.
package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/uplinkd/uplinkd/publish"
)

// New checks spec (secret files read and their mode checked, a CA file
// parsed) and returns its dyndns2 or rfc2136 Publisher.
func New(spec publish.Spec, opts publish.PublisherOptions) (publish.Publisher, error) {
	spec = spec.WithDefaults()
	switch spec.Kind {
	case publish.KindDynDNS2:
		return newDynDNS2(spec, opts)
	case publish.KindRFC2136:
		return newRFC2136(spec, opts)
	default:
		return nil, fmt.Errorf("publisher kind %q is not one the helper runs", spec.Kind)
	}
}

// maxRequest bounds the request read from the daemon.
const maxRequest = 1 << 20

// ServeHelper is uplinkd-helper's side of publish.HelperCheck (check only)
// and publish.HelperPublish: it reads a publish.HelperRequest from in,
// builds the publisher (the check) and, unless check, publishes once and
// writes the publish.HelperReply to out. An error is a request that could
// not be read or a spec the check refused; a failed publish is a reply.
func ServeHelper(ctx context.Context, in io.Reader, out io.Writer, check bool) error {
	var req publish.HelperRequest
	if err := json.NewDecoder(io.LimitReader(in, maxRequest)).Decode(&req); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	p, err := New(req.Spec, publish.PublisherOptions{Version: req.Version})
	if err != nil {
		return err
	}
	if check {
		return nil
	}
	res := p.Publish(ctx, publish.Request{Addr: req.Addr, Previous: req.Previous})
	return json.NewEncoder(out).Encode(publish.ReplyOf(res))
}
