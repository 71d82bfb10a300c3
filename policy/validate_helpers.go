package policy

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Helpers of the semantic checks: positions of keys, and the checks that
// many keys share.

// off is where path, or the nearest enclosing table present in the file, is
// written; a key left at its default has no position of its own.
func (l *loader) off(path string) int {
	for {
		if off, ok := l.pos[path]; ok || path == "" {
			return off
		}
		path = enclosing(path)
	}
}

// enclosing is the path of the table or array that path is in.
func enclosing(path string) string {
	if strings.HasSuffix(path, "]") {
		return path[:strings.LastIndexByte(path, '[')]
	}
	return path[:max(strings.LastIndexByte(path, '.'), 0)]
}

func (l *loader) set(path string) bool {
	_, ok := l.pos[path]
	return ok
}

func (l *loader) errorf(path, format string, args ...any) {
	for p := path; p != ""; p = enclosing(p) {
		if l.bad[p] {
			return
		}
	}
	l.problemAt(l.off(path), format, args...)
}

func (l *loader) line(path string) int {
	line, _ := l.lineCol(l.off(path))
	return line
}

// pathKey is the last key of a path, as messages call it: "targets[0]".
func pathKey(path string) string {
	return path[strings.LastIndexByte(path, '.')+1:]
}

// required reports a key that is missing, or set but empty.
func (l *loader) required(path string, ok bool) bool {
	switch {
	case ok:
	case l.set(path):
		l.errorf(path, "%s must not be empty", pathKey(path))
	default:
		l.errorf(path, "missing %q in %s", pathKey(path), tomlTableName(enclosing(path)))
	}
	return ok
}

// warnf records a harmless problem at path (see errorf for the position).
func (l *loader) warnf(path, format string, args ...any) {
	line, col := l.lineCol(l.off(path))
	l.warns = append(l.warns, Problem{File: l.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...), Warning: true})
}

// enum checks that a named string type holds one of its allowed values.
func enum[T ~string](l *loader, path string, v T, allowed ...T) bool {
	if slices.Contains(allowed, v) {
		return true
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	l.errorf(path, "%s must be one of %s (got %q)", pathKey(path), strings.Join(names, ", "), v)
	return false
}

func (l *loader) ports(path string, ports []uint16) {
	for i, p := range ports {
		if p == 0 {
			l.errorf(fmt.Sprintf("%s[%d]", path, i), "%s[%d] must be 1..65535 (got 0)", pathKey(path), i)
		}
	}
}

// argv checks a command line: at least the program, given by an absolute
// path (uplinkd runs it with a minimal environment, so a PATH lookup would
// find whatever comes first there), and no empty words.
func (l *loader) argv(path string, argv []string, need bool) {
	if need || l.set(path) {
		l.required(path, len(argv) > 0)
	}
	for i, a := range argv {
		switch {
		case !l.length(fmt.Sprintf("%s[%d]", path, i), "", a):
		case a == "":
			l.errorf(fmt.Sprintf("%s[%d]", path, i), "%s[%d] must not be empty", pathKey(path), i)
		case i == 0 && !filepath.IsAbs(a):
			l.errorf(fmt.Sprintf("%s[0]", path), "%s[0] must be an absolute path (got %q)", pathKey(path), a)
		}
	}
}

func (l *loader) absPath(path, v string) {
	if v != "" && !filepath.IsAbs(v) {
		l.errorf(path, "%s must be an absolute path (got %q)", pathKey(path), v)
		return
	}
	l.length(path, "", v)
}

// iface checks an interface name as the kernel's dev_valid_name does, so
// that no name reaches netlink that it would refuse.
func (l *loader) iface(path, v string) {
	if !l.length(path, "", v) {
		return
	}
	if v == "." || v == ".." || strings.ContainsFunc(v, func(r rune) bool {
		// isspace() in the kernel: space, \t, \n, \v, \f, \r.
		return r == '/' || r == ':' || r == ' ' || r >= '\t' && r <= '\r'
	}) {
		l.errorf(path, "%s %q is not a valid interface name", pathKey(path), v)
	}
}

// name checks one of the names the user gives things (uplinks, rules,
// services, publishers, DHCP hosts): bounded, printable UTF-8.
func (l *loader) name(path, v string) bool {
	if !l.length(path, "", v) {
		return false
	}
	if !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
		l.errorf(path, "%s must be printable UTF-8 without control characters (got %q)", pathKey(path), v)
		return false
	}
	return true
}

// isUnicast reports whether a is an IPv4 address a host can have: not in
// 0.0.0.0/8 ("this network"), loopback, multicast or the limited broadcast
// address.
func isUnicast(a netip.Addr) bool {
	return a.Is4() && a.As4()[0] != 0 && !a.IsLoopback() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// unicast reports an address that no host can have (see KeyLimits).
func (l *loader) unicast(path string, a netip.Addr) bool {
	if a.IsValid() && !isUnicast(a) {
		l.errorf(path, "%s must be a unicast address, not %s (0.0.0.0/8, loopback, multicast and 255.255.255.255 are not)", pathKey(path), a)
		return false
	}
	return true
}

// unique reports a value used twice within one namespace. The report goes
// to the later of the two in the file, whatever order they are checked in.
func (l *loader) unique(seen map[string]string, key, path, what string) {
	first, dup := seen[key]
	if !dup {
		seen[key] = path
		return
	}
	if l.off(path) < l.off(first) {
		first, path = path, first
		seen[key] = first
	}
	l.errorf(path, "duplicate %s (first at line %d)", what, l.line(first))
}

func isIPv4Addr(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

func isIPv4Port(s string) bool {
	ap, err := netip.ParseAddrPort(s)
	return err == nil && ap.Addr().Is4() && ap.Port() != 0
}

// canonicalMAC returns an Ethernet address in one spelling, so that
// "DC:A6:..." and "dc-a6-..." compare equal.
func canonicalMAC(s string) (string, bool) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", false
	}
	return hw.String(), true
}

// ProbeTargetAddr is the literal IP address a well-formed probe target
// names: an icmp address, the host of a tcp HOST:PORT, a dns IP or IP:PORT,
// the host of an http(s) URL; false for a host name or a malformed target.
// Its family decides which side probes it (docs/ipv6.md: an IPv6 target is
// an IPv6 health probe, whatever the method).
func ProbeTargetAddr(m ProbeMethod, s string) (netip.Addr, bool) {
	var host string
	switch m {
	case ProbeICMP:
		host = s
	case ProbeTCP:
		if !isHostPort(s) {
			return netip.Addr{}, false
		}
		host, _, _ = net.SplitHostPort(s)
	case ProbeDNS:
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr(), ap.Port() != 0
		}
		host = s
	case ProbeHTTP:
		if !isHTTPURL(s) {
			return netip.Addr{}, false
		}
		u, _ := url.Parse(s)
		host = u.Hostname()
	}
	a, err := netip.ParseAddr(host)
	return a, err == nil
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func isHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	p, perr := strconv.Atoi(port)
	return err == nil && host != "" && perr == nil && p >= 1 && p <= 65535
}

// isFQDN accepts a DNS name of at least two labels (a trailing dot is
// allowed): letters, digits, hyphens and underscores, labels 1..63 bytes.
func isFQDN(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, lb := range labels {
		if len(lb) == 0 || len(lb) > 63 || lb[0] == '-' || lb[len(lb)-1] == '-' {
			return false
		}
		for _, r := range lb {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
