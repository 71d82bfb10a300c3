package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
	"golang.org/x/sys/unix"
)

// eventDeadline bounds the daemon call of `uplinkd event`: it runs from
// pppd's, ifupdown's and keepalived's hook scripts and must never hold them
// up. The command as a whole, process start and exit included, gets 100 ms;
// the calls (retries included) get 90 of them.
const eventDeadline = 90 * time.Millisecond

// delegatedDeadline bounds a delegation event (`event --delegated`) from a
// DHCPv6-PD client's hook instead: a dropped delegation is not repaired
// until the client's next renewal (hours at a real ISP), and the hook
// shipped for dhcpcd gives the command 2 s (contrib/dhcpcd/70-uplinkd). A
// slow start of the command itself (seen in the VM suite's emulated CPU)
// must not cost the LAN its prefix.
const delegatedDeadline = 1500 * time.Millisecond

// busyRetry bounds how long the interactive commands (status, reload,
// reconnect, drain, undrain) retry a daemon that answers "busy".
const busyRetry = 2 * time.Second

// runControl runs the commands that talk to the daemon over its control
// socket. handled is false for any other command.
func runControl(cmd string, args []string, stdout, stderr io.Writer) (code int, handled bool) {
	switch cmd {
	case "status", "reconnect", "reload", "event", "drain", "undrain":
	default:
		return 0, false
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", "", "the daemon's control socket (default: the config's [daemon] control_socket)")
	configPath := fs.String("config", policy.DefaultConfigPath, "the configuration file that names the control socket")
	var asJSON, force bool
	var iface, state, local, remote, role, delegated, preferred, valid string
	switch cmd {
	case "status":
		fs.BoolVar(&asJSON, "json", false, "print the status as JSON (schema v1, docs/status.md)")
	case "drain":
		fs.BoolVar(&force, "force", false, "drain even the last uplink that carries the default route")
	case "event":
		fs.StringVar(&iface, "iface", "", "the interface the event is about")
		fs.StringVar(&state, "state", "", "up or down")
		fs.StringVar(&local, "local", "", "the interface's local address (pppd's PPP_LOCAL)")
		fs.StringVar(&remote, "remote", "", "the peer's address (pppd's PPP_REMOTE)")
		fs.StringVar(&role, "role", "", "this gateway's VRRP role: master, backup or fault")
		fs.StringVar(&delegated, "delegated", "", "an IPv6 prefix delegated to the interface (DHCPv6-PD), or none")
		fs.StringVar(&preferred, "preferred-lifetime", "", "the delegated prefix's preferred lifetime in seconds")
		fs.StringVar(&valid, "valid-lifetime", "", "the delegated prefix's valid lifetime in seconds")
	}
	// Flags may come before or after the arguments, as in
	// `reconnect dsl --socket PATH`.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, commandHelp[cmd])
				return exitOK, true
			}
			return usageError(stderr, cmd, err), true
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}

	req := control.Request{Cmd: cmd, Force: force}
	named := cmd == "reconnect" || cmd == "drain" || cmd == "undrain"
	switch {
	case named:
		if len(positional) != 1 {
			return usageError(stderr, cmd, fmt.Errorf("name one uplink: uplinkd %s NAME", cmd)), true
		}
		req.Uplink = positional[0]
	case cmd == "event":
		ev, err := parseEvent(iface, state, local, remote, role)
		if err == nil || delegated != "" && !errors.Is(err, errBadAddr) {
			ev, err = parseDelegated(ev, delegated, preferred, valid)
		}
		if err != nil {
			return usageError(stderr, cmd, err), true
		}
		req.Event = &ev
	}
	if !named && len(positional) != 0 {
		return usageError(stderr, cmd, fmt.Errorf("unexpected argument %q", positional[0])), true
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	target, err := findSocket(*configPath, set["config"], *socket, set["socket"])
	if err != nil {
		fmt.Fprintf(stderr, "uplinkd %s: %v\n", cmd, err)
		if errors.Is(err, errNoSocket) {
			return exitNotRunning, true
		}
		return exitUsage, true
	}

	if cmd == "event" {
		return sendEvent(target, req, stderr), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), control.DefaultCallTimeout)
	defer cancel()
	resp, err := callRetry(ctx, target.path, req, busyRetry, false)
	if err != nil {
		var remoteErr *control.RemoteError
		if errors.As(err, &remoteErr) {
			for _, p := range remoteErr.Problems {
				fmt.Fprintln(stderr, p)
			}
		}
		code, msg := explain(err, target)
		fmt.Fprintf(stderr, "uplinkd %s: %s\n", cmd, msg)
		return code, true
	}
	switch cmd {
	case "status":
		if resp.Status == nil {
			fmt.Fprintf(stderr, "uplinkd status: %s answered without a status: not an uplinkd of this version?\n", target.path)
			return exitProtocol, true
		}
		if asJSON {
			data, err := json.MarshalIndent(resp.Status, "", "  ")
			if err != nil {
				fmt.Fprintf(stderr, "uplinkd status: %v\n", err)
				return exitFailure, true
			}
			fmt.Fprintf(stdout, "%s\n", data)
		} else {
			fmt.Fprint(stdout, control.FormatStatus(*resp.Status, time.Now()))
		}
	case "reload":
		fmt.Fprintln(stdout, "config reloaded")
	case "reconnect":
		fmt.Fprintf(stdout, "reconnect of %s requested\n", req.Uplink)
	case "drain":
		fmt.Fprintf(stdout, "%s drained: out of the default route and its balancing; its connections go on\n", req.Uplink)
	case "undrain":
		fmt.Fprintf(stdout, "%s undrained: back in the default route and its balancing\n", req.Uplink)
	}
	return exitOK, true
}

// socketTarget is the socket a client command uses and where it came from,
// for the messages.
type socketTarget struct {
	path string
	// from: "--socket", the config file's path, or "" for the default
	// socket (no --config given, and the default config unreadable).
	from string
	// fallback says why the default config did not name the socket.
	fallback string
}

// errNoSocket: the config says the daemon runs without a control socket.
var errNoSocket = errors.New("no control socket")

// findSocket picks the control socket: --socket; else [daemon]
// control_socket of the config (--config, default /etc/uplinkd/uplinkd.toml);
// else, only when --config was not given and the default config cannot be
// read, the default socket. A --config given that cannot be read is an
// error: the admin named a file, and another daemon's socket is not what
// they asked for.
func findSocket(configPath string, configGiven bool, socket string, socketGiven bool) (socketTarget, error) {
	if socketGiven {
		if socket == "" {
			return socketTarget{}, errors.New("--socket: empty path")
		}
		return socketTarget{path: socket, from: "--socket"}, nil
	}
	path, err := controlSocketOf(configPath)
	switch {
	case err == nil && path == "-":
		return socketTarget{}, fmt.Errorf("%s: [daemon] control_socket = \"-\": the daemon runs without a control socket: %w", configPath, errNoSocket)
	case err == nil:
		return socketTarget{path: path, from: configPath}, nil
	case configGiven:
		return socketTarget{}, fmt.Errorf("--config %v (or name the socket with --socket)", err)
	}
	return socketTarget{path: control.DefaultPath, fallback: err.Error()}, nil
}

// maxConfigSize bounds the config read by a client command.
const maxConfigSize = 4 << 20

// controlSocketOf reads [daemon] control_socket from the config file at
// path, leniently: only that key is read, so a file the daemon would refuse
// for other reasons (one being edited) still names its socket. A FIFO or a
// device is refused without blocking on it.
func controlSocketOf(path string) (string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return "", fmt.Errorf("%s: larger than %d bytes", path, maxConfigSize)
	}
	var doc struct {
		Daemon struct {
			ControlSocket *string `toml:"control_socket"`
		} `toml:"daemon"`
	}
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return "", fmt.Errorf("%s:%d:%d: %s", path, row, col, strings.ReplaceAll(de.Error(), "\n", " "))
		}
		return "", fmt.Errorf("%s: [daemon] control_socket: %v", path, err)
	}
	if doc.Daemon.ControlSocket == nil || *doc.Daemon.ControlSocket == "" {
		return policy.DefaultControlSocket, nil
	}
	sock := *doc.Daemon.ControlSocket
	if sock != "-" && !filepath.IsAbs(sock) {
		return "", fmt.Errorf("%s: [daemon] control_socket %q is not an absolute path", path, sock)
	}
	return sock, nil
}

// callRetry calls the daemon and retries, until ctx ends or for at most
// retryFor, while the daemon answers "busy" (and, with restarting, while
// the socket is missing or refuses connections: a daemon being restarted).
func callRetry(ctx context.Context, path string, req control.Request, retryFor time.Duration, restarting bool) (control.Response, error) {
	until := time.Now().Add(retryFor)
	wait := time.Millisecond
	var prev error
	for {
		resp, err := control.Call(ctx, path, req)
		if err != nil && prev != nil && ctx.Err() != nil {
			// The deadline ran out during this attempt (a busy box can
			// stall a retry past it): what the earlier attempts found
			// (no socket, refused, busy) is the answer, not the deadline.
			return resp, prev
		}
		if err == nil || !retryable(err, restarting) {
			return resp, err
		}
		prev = err
		next := time.Now().Add(wait)
		if dl, ok := ctx.Deadline(); next.After(until) || (ok && next.After(dl)) {
			return resp, err
		}
		// Jittered, so that clients refused together do not come back
		// together.
		select {
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		case <-ctx.Done():
			return resp, err
		}
		wait = min(2*wait, 10*time.Millisecond)
	}
}

func retryable(err error, restarting bool) bool {
	var re *control.RemoteError
	if errors.As(err, &re) {
		return re.Busy
	}
	// A full listen backlog: the daemon is there, the queue is not.
	if errors.Is(err, syscall.EAGAIN) {
		return true
	}
	return restarting && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED))
}

// explain turns a Call error into the command's one line and exit status.
func explain(err error, t socketTarget) (int, string) {
	var re *control.RemoteError
	var pe *control.ProtocolError
	where := t.path
	if t.from != "" && t.from != "--socket" {
		where += " (control_socket of " + t.from + ")"
	}
	if t.fallback != "" {
		where += " (the default socket: " + t.fallback + ")"
	}
	start := "; start it with: systemctl start uplinkd"
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		// A box busy enough to spend the whole budget before the first
		// connect (event's 90 ms) leaves no answer to explain; a socket
		// that is not there is still the truth to tell.
		if _, serr := os.Lstat(t.path); errors.Is(serr, fs.ErrNotExist) {
			err = serr
		}
	}
	switch {
	case errors.As(err, &re) && re.Busy:
		return exitFailure, fmt.Sprintf("the daemon on %s stayed busy for %s (too many control connections); try again", t.path, busyRetry)
	case errors.As(err, &re) && re.Msg == "permission denied":
		return exitDenied, fmt.Sprintf("the daemon on %s refused us: permission denied (run as root or as a member of [daemon] control_group)", t.path)
	case errors.As(err, &re):
		return exitFailure, re.Msg
	case errors.As(err, &pe):
		return exitProtocol, fmt.Sprintf("%s answered, but not as uplinkd does (%v): is it uplinkd's socket?", t.path, pe.Err)
	case errors.Is(err, syscall.ENOENT):
		return exitNotRunning, "uplinkd is not running: no socket at " + where + start
	case errors.Is(err, syscall.ECONNREFUSED):
		return exitNotRunning, "uplinkd is not running: nothing listens on " + where + " (a stale socket)" + start
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return exitDenied, "permission denied on " + where + " (run as root or as a member of [daemon] control_group)"
	case errors.Is(err, syscall.ENOTSOCK) || errors.Is(err, syscall.ENOTDIR):
		return exitNotRunning, where + " is not a socket: uplinkd is not running there" + start
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return exitNotRunning, "uplinkd on " + where + " did not answer in time: the daemon is stuck, or the socket is not uplinkd's"
	}
	return exitNotRunning, fmt.Sprintf("uplinkd on %s not reached: %v", where, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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
			return ev, fmt.Errorf("%w: %s: %w", errBadAddr, a.flag, err)
		}
		*a.dst = addr
	}
	return ev, ev.Validate()
}

// errBadAddr marks an unparsable --local or --remote.
var errBadAddr = errors.New("bad address")

// parseDelegated adds a delegation (--delegated and its lifetimes) to ev,
// which holds the interface, and validates the whole.
func parseDelegated(ev control.Event, delegated, preferred, valid string) (control.Event, error) {
	ev.Delegated = delegated
	for _, l := range []struct {
		flag, text string
		dst        **uint32
	}{{"--preferred-lifetime", preferred, &ev.PreferredLifetime}, {"--valid-lifetime", valid, &ev.ValidLifetime}} {
		if l.text == "" {
			continue
		}
		v, err := strconv.ParseUint(l.text, 10, 32)
		if err != nil {
			return ev, fmt.Errorf("%s %q: want seconds, 0..4294967295", l.flag, l.text)
		}
		s := uint32(v)
		*l.dst = &s
	}
	return ev, ev.Validate()
}

// sendEvent delivers an event within eventDeadline, retrying a busy or
// restarting daemon. An interface event that does not get through is a
// warning and exit 0: the hook that called us must go on, and the daemon
// reads every link from netlink anyway (at start too). A role event that
// does not get through exits 3 with an error: nothing else tells the
// daemon the role (keepalived notifies on changes only), so the hook must
// see the failure (uplinkd-notify logs it). A daemon that answers with an
// error is exit 1.
func sendEvent(t socketTarget, req control.Request, stderr io.Writer) int {
	deadline := eventDeadline
	if req.Event.Delegated != "" {
		deadline = delegatedDeadline
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, err := callRetry(ctx, t.path, req, deadline, true)
	var remoteErr *control.RemoteError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &remoteErr) && !remoteErr.Busy && !remoteErr.Unread:
		// The daemon read the event and refused it (a bad name, a role
		// off the master): that is the answer, not a delivery failure.
		code, msg := explain(err, t)
		fmt.Fprintf(stderr, "uplinkd event: %s\n", msg)
		return code
	case req.Event.Role != "":
		_, msg := explain(err, t)
		fmt.Fprintf(stderr, "uplinkd event: role %s NOT delivered: %s\n", req.Event.Role, msg)
		return exitNotRunning
	default:
		_, msg := explain(err, t)
		fmt.Fprintf(stderr, "uplinkd event: warning: event dropped: %s\n", msg)
		return exitOK
	}
}
