package policy

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Layer 5 of the loader: names resolved to numbers.

// Name lookups of the loader. They read the system's databases (NSS), which
// is why they happen here, once, and not in the pure functions that use the
// Config.
var (
	// pppPeersDir is where pppd's `call PEER` finds its options (pon uses it).
	pppPeersDir = "/etc/ppp/peers"
	lookupUser  = func(name string) (string, error) { u, err := user.Lookup(name); return idOf(u, err) }
	lookupGroup = func(name string) (string, error) { g, err := user.LookupGroup(name); return gidOf(g, err) }
)

func idOf(u *user.User, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return u.Uid, nil
}

func gidOf(g *user.Group, err error) (string, error) {
	if err != nil {
		return "", err
	}
	return g.Gid, nil
}

// resolve turns names into numbers: [[rule]] user into uid, [daemon]
// control_group into a gid. A name that does not resolve is a problem at
// the key that holds it.
func (l *loader) resolve(c *Config) {
	if g := c.Daemon.ControlGroup; g != "" {
		if id, ok := l.lookupID("daemon.control_group", "group", g, lookupGroup); ok {
			c.Daemon.ControlGID = id
		}
	}
	l.peerDefaultRoutes(c)
	for i := range c.Rules {
		r := &c.Rules[i]
		p := fmt.Sprintf("rule[%d].user", i)
		if r.User == "" || r.UID != nil {
			continue
		}
		if id, ok := l.lookupID(p, "user", r.User, lookupUser); ok {
			r.UID = &id
		}
	}
}

func (l *loader) lookupID(path, what, name string, lookup func(string) (string, error)) (uint32, bool) {
	s, err := lookup(name)
	if err != nil {
		l.errorf(path, "unknown %s %q", what, name)
		return 0, false
	}
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		l.errorf(path, "%s %q has id %q, which is not a number", what, name, s)
		return 0, false
	}
	return uint32(id), true
}

// parseHTTPURL parses a dyndns2 server.
func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("not an http or https URL")
	}
	return u, nil
}

// dnsServerAddr resolves an rfc2136 server, HOST or HOST:PORT, to host:port
// with the DNS port as the default.
func dnsServerAddr(s string) (string, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.ContainsAny(s, ":/ ") || s == "" {
			return "", false
		}
		host, port = s, DefaultRFC2136Port
	}
	p, perr := strconv.Atoi(port)
	if host == "" || perr != nil || p < 1 || p > 65535 {
		return "", false
	}
	return net.JoinHostPort(host, port), true
}

// peerDefaultRoutes warns, naming the peer file, when a ppp uplink that
// uplinkd dials ([uplink.reconnect]) has `defaultroute` in its pppd options.
// It is harmless for uplinkd, whose default route lives in its own table and
// routes around main's, but pppd's route then carries the host's traffic
// whenever no uplink is usable, also via this line: worth knowing, not worth
// refusing (seed set-ups keep their peer files as they are).
func (l *loader) peerDefaultRoutes(c *Config) {
	for i, u := range c.Uplinks {
		if u.Kind != KindPPP || u.Reconnect == nil {
			continue
		}
		peer := u.Reconnect.Peer
		path := fmt.Sprintf("uplink[%d].reconnect.peer", i)
		if peer == "" {
			peer, path = u.Name, fmt.Sprintf("uplink[%d].reconnect", i)
		}
		file := filepath.Join(pppPeersDir, peer)
		if hasPPPOption(file, "defaultroute") {
			l.warnf(path, "peer file %s has `defaultroute`: uplinkd routes around pppd's default route in main, which then carries traffic only when no uplink is usable (use `nodefaultroute` to have none)", file)
		}
	}
}

// hasPPPOption reports whether a pppd options file sets option (a word on
// a line of its own, outside comments). A missing file sets nothing.
func hasPPPOption(file, option string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		for _, w := range strings.Fields(line) {
			if w == option {
				return true
			}
		}
	}
	return false
}
