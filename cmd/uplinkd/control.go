package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
)

// eventDeadline bounds the daemon call of `uplinkd event`: it runs from
// pppd's and ifupdown's hook scripts and must never hold them up. The
// command as a whole, process start and exit included, gets 100 ms; the
// call gets 90 of them.
const eventDeadline = 90 * time.Millisecond

const controlUsage = `
commands that ask the running daemon (flag --socket PATH, default ` + control.DefaultPath + `;
use it when [daemon] control_socket is set to another path):
  status [--json]                 uplinks, state and why, addresses, loss, rtt, last event
  reconnect NAME                  reconnect the uplink NAME now
  reload                          re-read the config; prints its problems and exits 1 when it is bad
  event --iface IF --state up|down [--local A --remote B]
  event --role master|backup|fault
                                  poke from ppp/ifupdown/keepalived hooks; gives up after 100 ms and
                                  exits 0 with a warning when the daemon is not reachable
`

// runControl runs the commands that talk to the daemon over its control
// socket. handled is false for any other command.
func runControl(cmd string, args []string, stdout, stderr io.Writer) (code int, handled bool) {
	switch cmd {
	case "status", "reconnect", "reload", "event":
	default:
		return 0, false
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", control.DefaultPath, "the daemon's control socket ([daemon] control_socket)")
	var asJSON bool
	var iface, state, local, remote, role string
	switch cmd {
	case "status":
		fs.BoolVar(&asJSON, "json", false, "print the status as JSON (schema v1, docs/status.md)")
	case "event":
		fs.StringVar(&iface, "iface", "", "the interface the event is about")
		fs.StringVar(&state, "state", "", "up or down")
		fs.StringVar(&local, "local", "", "the interface's local address (pppd's PPP_LOCAL)")
		fs.StringVar(&remote, "remote", "", "the peer's address (pppd's PPP_REMOTE)")
		fs.StringVar(&role, "role", "", "this gateway's VRRP role: master, backup or fault")
	}
	if err := fs.Parse(args); err != nil {
		return 2, true
	}

	req := control.Request{Cmd: cmd}
	switch cmd {
	case "reconnect":
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "usage: uplinkd reconnect [--socket PATH] NAME")
			return 2, true
		}
		req.Uplink = fs.Arg(0)
	case "event":
		ev, err := parseEvent(iface, state, local, remote, role)
		if err != nil {
			fmt.Fprintf(stderr, "uplinkd event: %v\n", err)
			return 2, true
		}
		req.Event = &ev
	}
	if cmd != "reconnect" && fs.NArg() != 0 {
		fmt.Fprintf(stderr, "uplinkd %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2, true
	}

	if cmd == "event" {
		return sendEvent(*socket, req, stderr), true
	}
	resp, err := control.Call(context.Background(), *socket, req)
	var remoteErr *control.RemoteError
	if err != nil {
		if errors.As(err, &remoteErr) {
			for _, p := range remoteErr.Problems {
				fmt.Fprintln(stderr, p)
			}
		}
		fmt.Fprintf(stderr, "uplinkd %s: %v\n", cmd, err)
		return 1, true
	}
	switch cmd {
	case "status":
		if resp.Status == nil {
			fmt.Fprintln(stderr, "uplinkd status: the daemon sent no status")
			return 1, true
		}
		if asJSON {
			data, err := json.MarshalIndent(resp.Status, "", "  ")
			if err != nil {
				fmt.Fprintf(stderr, "uplinkd status: %v\n", err)
				return 1, true
			}
			fmt.Fprintf(stdout, "%s\n", data)
		} else {
			fmt.Fprint(stdout, control.FormatStatus(*resp.Status, time.Now()))
		}
	case "reload":
		fmt.Fprintln(stdout, "config reloaded")
	case "reconnect":
		fmt.Fprintf(stdout, "reconnect of %s requested\n", req.Uplink)
	}
	return 0, true
}

// parseEvent builds the event from the flags: an interface with a state
// (and addresses), or a role alone.
func parseEvent(iface, state, local, remote, role string) (control.Event, error) {
	ev := control.Event{Iface: iface, State: control.LinkState(state), Role: control.Role(role)}
	for _, a := range []struct {
		flag, text string
		dst        *netip.Addr
	}{{"--local", local, &ev.Local}, {"--remote", remote, &ev.Remote}} {
		if a.text == "" {
			continue
		}
		addr, err := netip.ParseAddr(a.text)
		if err != nil {
			return ev, fmt.Errorf("%s: %w", a.flag, err)
		}
		*a.dst = addr
	}
	return ev, ev.Validate()
}

// sendEvent delivers an event within eventDeadline. A daemon that is not
// running or does not answer in time is a warning and exit 0: the hook
// that called us must go on, and the daemon reads the kernel state when it
// starts anyway. A daemon that answers with an error is exit 1.
func sendEvent(socket string, req control.Request, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), eventDeadline)
	defer cancel()
	_, err := control.Call(ctx, socket, req)
	var remoteErr *control.RemoteError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &remoteErr):
		fmt.Fprintf(stderr, "uplinkd event: %v\n", err)
		return 1
	default:
		fmt.Fprintf(stderr, "uplinkd event: warning: daemon not reached, event dropped: %v\n", err)
		return 0
	}
}
