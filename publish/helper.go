package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/uplinkd/uplinkd/internal/helper"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// The dyndns2 and rfc2136 publishers run in uplinkd-helper (package
// publish/remote), so that the daemon links neither net/http and TLS nor
// miekg/dns (internal/helper says why). The daemon side below sends the
// helper a HelperRequest on stdin and reads a HelperReply from its stdout;
// secrets stay in their files, which the helper reads itself.

// Subcommands of uplinkd-helper for publishers.
const (
	HelperCheck   = "publish-check" // check the spec as loading does; exit 0 or 1 with the reason on stderr
	HelperPublish = "publish"       // publish once; the reply on stdout
)

// HelperRequest is what uplinkd-helper publish and publish-check read on
// stdin.
type HelperRequest struct {
	Spec     Spec       `json:"spec"`
	Addr     netip.Addr `json:"addr,omitzero"`
	Previous netip.Addr `json:"previous,omitzero"`
	Version  string     `json:"version,omitempty"` // the daemon's, for the dyndns2 User-Agent
}

// HelperReply is what uplinkd-helper publish writes on stdout: a Result.
type HelperReply struct {
	Outcome string `json:"outcome"` // Outcome.String()
	Reply   string `json:"reply,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ReplyOf is res as a HelperReply.
func ReplyOf(res Result) HelperReply {
	r := HelperReply{Outcome: res.Outcome.String(), Reply: res.Reply}
	if res.Err != nil {
		r.Error = res.Err.Error()
	}
	return r
}

// result is the Result r stands for.
func (r HelperReply) result() (Result, error) {
	res := Result{Reply: r.Reply}
	switch r.Outcome {
	case "ok":
		res.Outcome = OK
	case "retry":
		res.Outcome = Retry
	case "permanent":
		res.Outcome = Permanent
	default:
		return Result{}, fmt.Errorf("unknown outcome %q", r.Outcome)
	}
	if r.Error != "" {
		res.Err = errors.New(r.Error)
	}
	return res, nil
}

// helperCheckTimeout bounds the check at load: the helper reads a few
// small files and exits.
const helperCheckTimeout = 10 * time.Second

type helperPublisher struct {
	spec    Spec
	version string
}

func newHelperPublisher(spec Spec, opts PublisherOptions) (*helperPublisher, error) {
	if opts.Dial != nil {
		return nil, fmt.Errorf("%s: PublisherOptions.Dial works in-process only (publish/remote.New)", spec.Kind)
	}
	p := &helperPublisher{spec: spec, version: opts.Version}
	ctx, cancel := context.WithTimeout(context.Background(), helperCheckTimeout)
	defer cancel()
	if _, err := p.run(ctx, HelperCheck, Request{}); err != nil {
		if e := (*helper.Error)(nil); errors.As(err, &e) && e.Code == helper.ExitFailed {
			// The check's own reason, which names the kind already.
			return nil, errors.New(e.Msg)
		}
		return nil, fmt.Errorf("%s: %w", spec.Kind, err)
	}
	return p, nil
}

func (p *helperPublisher) run(ctx context.Context, sub string, req Request) ([]byte, error) {
	in, err := json.Marshal(HelperRequest{Spec: p.spec, Addr: req.Addr, Previous: req.Previous, Version: p.version})
	if err != nil {
		return nil, err
	}
	// The daemon's own namespace: publishing follows the main table, as
	// it did in-process.
	return helper.Run(ctx, int(netnsx.Own), in, sub)
}

// Publish runs one attempt in the helper, which enforces spec.Timeout
// itself; the manager's backstop deadline on ctx kills a helper that does
// not.
func (p *helperPublisher) Publish(ctx context.Context, req Request) Result {
	out, err := p.run(ctx, HelperPublish, req)
	if err != nil {
		// The helper is missing, crashed or was killed: nothing says the
		// config is wrong, so try again later.
		return Result{Outcome: Retry, Err: fmt.Errorf("%s: %w", p.spec.Kind, err)}
	}
	var reply HelperReply
	if err := json.Unmarshal(out, &reply); err != nil {
		return Result{Outcome: Retry, Err: fmt.Errorf("%s: %s's reply: %w", p.spec.Kind, helper.Name, err)}
	}
	res, err := reply.result()
	if err != nil {
		return Result{Outcome: Retry, Err: fmt.Errorf("%s: %s's reply: %w", p.spec.Kind, helper.Name, err)}
	}
	return res
}
