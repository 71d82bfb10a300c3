package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"

	"github.com/uplinkd/uplinkd/hooks"
)

// commandPublisher runs argv (no shell) with the UPLINKD_* environment.
// Exit 0 is success; 64–78 (sysexits.h: EX_USAGE … EX_CONFIG) says the
// command cannot succeed as configured, which is permanent; anything else,
// a timeout included, is retried with backoff.
type commandPublisher struct {
	spec Spec
	log  *slog.Logger
}

func newCommandPublisher(spec Spec, opts PublisherOptions) (*commandPublisher, error) {
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, errors.New("command publisher: empty command")
	}
	spec.Command = slices.Clone(spec.Command)
	return &commandPublisher{spec: spec, log: opts.Log}, nil
}

// familyName is UPLINKD_FAMILY of a publisher: ipv4 or ipv6.
func familyName(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

// addrString is a's text, or "" for no address (the zero Addr).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (c *commandPublisher) Publish(ctx context.Context, req Request) Result {
	env := []string{
		"UPLINKD_EVENT=publish",
		"UPLINKD_UPLINK=" + c.spec.Uplink,
		"UPLINKD_IFACE=" + c.spec.Iface,
		"UPLINKD_NEW_IP=" + addrString(req.Addr),
		"UPLINKD_OLD_IP=" + addrString(req.Previous),
		"UPLINKD_PUBLISHER=" + c.spec.Name,
		"UPLINKD_FAMILY=" + familyName(c.spec.IPv6),
	}
	log := c.log.With("event", "publish", "uplink", c.spec.Uplink, "iface", c.spec.Iface, "publisher", c.spec.Name)
	res := hooks.RunCommand(ctx, log, c.spec.Command, env, c.spec.Timeout)
	reply := res.Outcome()
	if res.ExitCode >= 0 {
		reply = "exit " + strconv.Itoa(res.ExitCode)
	}
	switch {
	case res.Err == nil:
		return Result{Outcome: OK, Reply: reply}
	case res.ExitCode >= 64 && res.ExitCode <= 78:
		return Result{Outcome: Permanent, Reply: reply, Err: fmt.Errorf("%s: exit status %d (sysexits: the command says it cannot succeed as configured)", c.spec.Command[0], res.ExitCode)}
	case res.TimedOut:
		return Result{Outcome: Retry, Reply: reply, Err: fmt.Errorf("%s: timed out after %v", c.spec.Command[0], c.spec.Timeout)}
	default:
		return Result{Outcome: Retry, Reply: reply, Err: fmt.Errorf("%s: %w", c.spec.Command[0], res.Err)}
	}
}
