package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
)

// Exit statuses, the same for every command (docs/commands.md, "Exit statuses").
// exitConfig is sysexits' EX_CONFIG: `uplinkd run` exits with it on a
// config it will not run, and the systemd unit lists it in
// RestartPreventExitStatus so that a broken file is not retried forever.
const (
	exitOK         = 0
	exitFailure    = 1 // check found problems; the daemon refused or failed the request
	exitUsage      = 2 // unknown command or flag, bad argument, a --config that cannot be read
	exitNotRunning = 3 // no daemon answers on the socket (LSB's "program is not running")
	exitDenied     = 4 // the socket or the daemon refused us: not root, not in control_group
	exitProtocol   = 5 // something answered on the socket, but not as uplinkd does
	exitConfig     = 78
)

// commandHelp is what `uplinkd help CMD` and `uplinkd CMD --help` print.
var commandHelp = map[string]string{
	"run": `usage: uplinkd run [--flush-on-exit] [--log-format FORMAT] [--config PATH | PATH]

Runs the daemon (systemd Type=notify); needs CAP_NET_ADMIN. It refuses a
config that check refuses, and one without [[uplink]], with exit 78 before it
touches anything. A stop leaves routes, rules and NAT in place.

  --flush-on-exit       remove what uplinkd owns (like flush) when it stops on SIGTERM or SIGINT
  --log-format FORMAT   auto (journal under systemd, else text) | text | json | journal
  --config PATH         the configuration file (default ` + policy.DefaultConfigPath + `)

SIGHUP re-reads the config (also during start-up: it is then applied once
the loop runs); SIGTERM and SIGINT stop the daemon.
`,
	"check": `usage: uplinkd check [--strict | --condition] [--config PATH | PATH]

Validates the config as run would: exit 0 when run would start with it, 1
when run would refuse it (one line per problem, PATH:LINE:COL: message).
Warnings are printed too; --strict fails on them.

--condition is the systemd unit's ExecCondition=: exit 1 (the unit is
skipped, not failed) only when the file is missing or has no [[uplink]]
and no other problem; 0 otherwise, so that run reports a broken file and
fails the unit with exit 78.
`,
	"plan": `usage: uplinkd plan [--config PATH | PATH]

Prints what run would change now: ip and sysctl commands, then the firewall
batch. Reads the kernel state (root), changes nothing.
`,
	"flush": `usage: uplinkd flush [--config PATH | PATH]

Removes every rule, route and firewall table or chain uplinkd owns.
`,
	"status": `usage: uplinkd status [--json] [--config PATH] [--socket PATH]

Asks the running daemon for the uplinks, their state and why, addresses,
loss, RTT, the last event and the traffic counters. --json prints the
status schema v1 (docs/status.md).
` + clientFlagsHelp,
	"reload": `usage: uplinkd reload [--config PATH] [--socket PATH]

Asks the daemon to re-read its config and waits for it: a bad file is
printed one problem a line, exit 1, and the running config stays.
` + clientFlagsHelp,
	"reconnect": `usage: uplinkd reconnect [--config PATH] [--socket PATH] NAME

Asks the daemon to reconnect the uplink NAME now (its [uplink.reconnect]).
` + clientFlagsHelp,
	"drain": `usage: uplinkd drain [--force] [--config PATH] [--socket PATH] NAME

Asks the daemon to take the uplink NAME out of the default route, its load
balancing and failover (docs/drain.md). Connections already on it go on;
its own from rule, its table and traffic a [[rule]] sends through it stay.
The drain is kept in [daemon] state_dir and outlives a restart. Draining the
last uplink that carries the default route is refused unless --force.

  --force         drain even the last uplink that carries the default route
` + clientFlagsHelp,
	"undrain": `usage: uplinkd undrain [--config PATH] [--socket PATH] NAME

Asks the daemon to put the drained uplink NAME back into the default route,
its load balancing and failover.
` + clientFlagsHelp,
	"event": `usage: uplinkd event --iface IF --state up|down [--local A --remote B] [--config PATH] [--socket PATH]
       uplinkd event --role master|backup|fault [--config PATH] [--socket PATH]
       uplinkd event --iface IF --delegated PREFIX|none [--preferred-lifetime S] [--valid-lifetime S] [--config PATH] [--socket PATH]

A poke from the ppp, ifupdown, networkd-dispatcher and keepalived hook
scripts. It retries a busy or restarting daemon within 100 ms, then gives up:
an interface event is then dropped with a warning and exit 0 (the daemon
reads every link from netlink anyway); a role event exits 3 with an error,
because a lost role change is not repaired by anything else.

--delegated reports the IPv6 prefix a DHCPv6-PD client got on IF (lifetimes
in seconds, 4294967295 infinite; left out: infinite), or none when the
delegation ended; the daemon keeps it in <state_dir>/delegated.json for
[lan.ipv6]. The dhcpcd hook the package installs calls it. Not delivered,
it is dropped with a warning like an interface event (the PD client
reports it again at its next renewal).
` + clientFlagsHelp,
	"version": `usage: uplinkd version (or uplinkd --version)

Prints the version of this binary.
`,
	"help": `usage: uplinkd help [COMMAND] (or uplinkd COMMAND --help)

Prints the usage of uplinkd or of one command.
`,
}

const clientFlagsHelp = `
  --config PATH   the configuration file whose [daemon] control_socket is the
                  socket to use (default ` + policy.DefaultConfigPath + `). When --config
                  is not given and that file is missing or unreadable, the default
                  socket is used; a --config given that cannot be read is an error
  --socket PATH   the socket to use, whatever the config says (default
                  ` + control.DefaultPath + `)
`

const usage = `usage: uplinkd COMMAND [flags] [PATH]

The daemon and its tools (PATH or --config PATH is the configuration file;
default ` + policy.DefaultConfigPath + `):
  run   [--flush-on-exit] [PATH]  run the daemon (systemd Type=notify); needs CAP_NET_ADMIN
  check [--strict] [PATH]         exit 0 when run would start with the config; problems as PATH:LINE:COL
  check --condition [PATH]        the unit's ExecCondition: exit 1 when there is no uplink to run yet
  plan  [PATH]                    print what run would change now
  flush [PATH]                    remove every rule, route and firewall table uplinkd owns

Commands that ask the running daemon on its control socket (the config's
[daemon] control_socket; --config PATH, --socket PATH):
  status [--json]                 uplinks, state and why, addresses, loss, rtt, last event
  reconnect NAME                  reconnect the uplink NAME now
  drain [--force] NAME            take the uplink NAME out of the default route and balancing
  undrain NAME                    put the uplink NAME back
  reload                          re-read the config; prints its problems and exits 1 when it is bad
  event --iface IF --state up|down [--local A --remote B]
  event --role master|backup|fault
  event --iface IF --delegated PREFIX|none [--preferred-lifetime S] [--valid-lifetime S]
                                  poke from the ppp, ifupdown, networkd-dispatcher and keepalived hooks

  version                         print the version (also --version)
  help [COMMAND]                  this text, or one command's (also COMMAND --help)

Exit status: 0 done, 1 problems or the daemon refused the request, 2 usage,
3 uplinkd is not running, 4 permission denied, 5 not an uplinkd answer on
the socket, 78 run refuses the config.
`

// printVersion prints the version line of `uplinkd version`.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "uplinkd %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// help runs `uplinkd help [CMD]`.
func help(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		fmt.Fprint(stdout, usage)
		return exitOK
	case 1:
		if text, ok := commandHelp[args[0]]; ok {
			fmt.Fprint(stdout, text)
			return exitOK
		}
		fmt.Fprintf(stderr, "uplinkd help: unknown command %q; commands: %s\n", args[0], commandNames())
		return exitUsage
	}
	fmt.Fprintln(stderr, "uplinkd help: one command at most")
	return exitUsage
}

func commandNames() string {
	return "run, check, plan, flush, status, reload, reconnect, drain, undrain, event, version, help"
}

// usageError prints the one line for a bad command line, pointing at the
// command's help.
func usageError(stderr io.Writer, cmd string, err error) int {
	msg := strings.TrimSpace(err.Error())
	fmt.Fprintf(stderr, "uplinkd %s: %s (see uplinkd help %s)\n", cmd, msg, cmd)
	return exitUsage
}
