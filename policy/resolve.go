package policy

import (
	"fmt"
	"net"
	"net/url"
	"os/user"
	"strconv"
	"strings"
)

// Layer 5 of the loader: names resolved to numbers.

// Name lookups of the loader. They read the system's databases (NSS), which
// is why they happen here, once, and not in the pure functions that use the
// Config.
var (
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
