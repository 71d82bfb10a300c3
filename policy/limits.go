package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeyLimits as data: the documented range of every duration, count and length
// in the file, and the rules for its addresses and names, in one table.
// The loader's checks take their bounds from here (validate.go), the
// reference in docs/config-limits.md is generated from it (LimitsMarkdown;
// TestLimitsDoc keeps it current), and limits_test.go tries every bound
// from just inside and just outside. A value inside its range is one the
// daemon and the kernel can live with: `uplinkd check` predicts `run`.

// LimitKind says what a KeyLimit bounds.
type LimitKind int

// KeyLimit kinds.
const (
	LimitDuration LimitKind = iota // a duration string; Min and Max in nanoseconds
	LimitCount                     // an integer
	LimitLength                    // a string's length in bytes
	LimitRule                      // an address or name rule, described by Rule
)

// KeyLimit is the range of one key (or of keys that share it).
type KeyLimit struct {
	// Keys are paths without array indices, as in "uplink.check.interval".
	Keys []string
	Kind LimitKind
	Min  int64
	Max  int64
	// Rule describes a LimitRule; the others format Min..Max.
	Rule string
	// Hint, when set, follows the range in the error message: why the
	// bound is where it is, in a few words.
	Hint string
	// Why is the reason for the range, for the documentation.
	Why string
}

const (
	ms     = int64(time.Millisecond)
	sec    = int64(time.Second)
	minute = int64(time.Minute)
	hour   = int64(time.Hour)
	day    = 24 * hour
)

// MaxControlSocketPath is the longest control socket path: sun_path holds
// 108 bytes with the NUL, and internal/control binds "<path>.<pid>.tmp"
// first (up to 16 more bytes) and renames it into place.
const MaxControlSocketPath = 91

// MaxNameLen bounds the names of uplinks, rules, services, publishers and
// DHCP hosts. They end up in nftables rule comments (at most 256 bytes of
// user data with the prefix), chain names, state file names (escaped, 255
// bytes per component) and hook environments.
const MaxNameLen = 64

// MaxIfaceLen is IFNAMSIZ (16) without the NUL.
const MaxIfaceLen = 15

// MaxProbeTargets bounds the targets of one [uplink.check]: each is probed
// every interval.
const MaxProbeTargets = 16

// KeyLimits is the table. Keep it in file order of the reference
// (contrib/uplinkd.toml) so that the generated page reads like it.
var KeyLimits = []KeyLimit{
	{Keys: []string{"daemon.control_socket"}, Kind: LimitLength, Min: 1, Max: MaxControlSocketPath,
		Hint: "a unix socket address holds 108 bytes, and the socket is bound under a temporary name 16 bytes longer first",
		Why:  "sun_path is 108 bytes with the NUL; `run` binds `<path>.<pid>.tmp` and renames it into place"},
	{Keys: []string{"daemon.state_dir", "daemon.hook_dir", "ha.track_file", "uplink.publish.password_file", "uplink.publish.key_file", "uplink.publish.ca_file"}, Kind: LimitLength, Min: 1, Max: 1024,
		Why: "absolute paths, with room for the names uplinkd puts inside (PATH_MAX is 4096)"},
	{Keys: []string{"daemon.default_priority"}, Kind: LimitCount, Min: 1, Max: 32764,
		Why: "rule priorities 0, 32766 and 32767 are the kernel's (local, main, default); this one and the next are used"},
	{Keys: []string{"daemon.sticky_priority"}, Kind: LimitCount, Min: 1, Max: 32765,
		Why: "one priority per uplink from here on, all below 32766 (main); the top is 32765 minus the uplinks after the first"},
	{Keys: []string{"daemon.min_sync_interval"}, Kind: LimitDuration, Min: 0, Max: minute,
		Hint: "events inside it wait for the next pass, so a longer one leaves damage unrepaired",
		Why:  "changes inside the interval wait for the next pass: a long one leaves a deleted route or rule unrepaired that long"},
	{Keys: []string{"lan.interface", "uplink.interface", "rule.in_interface"}, Kind: LimitLength, Min: 1, Max: MaxIfaceLen,
		Why: "IFNAMSIZ is 16 bytes with the NUL; the kernel also refuses `.`, `..` and names with `/`, `:` or white space"},
	{Keys: []string{"lan.networks[]"}, Kind: LimitRule,
		Rule: "an IPv4 prefix of length 8..32, not loopback (127/8), multicast (224/4) or 0/8",
		Why:  "a LAN is a real subnet; a shorter prefix would make most of the internet \"LAN\" (hairpin, exclusions)"},
	{Keys: []string{"lan.dhcp.range"}, Kind: LimitRule,
		Rule: "two addresses inside one of lan.networks, neither its network nor its broadcast address, at most 65536 apart",
		Why:  "clients cannot use the network or broadcast address; the pool is kept in memory and in the lease file"},
	{Keys: []string{"lan.dhcp.lease", "lan.dhcp.max_lease"}, Kind: LimitDuration, Min: minute, Max: 365 * day,
		Why: "the lease time option is 32-bit seconds; clients renew at half the lease, so shorter leases are mostly traffic"},
	{Keys: []string{"lan.dhcp.router[]", "lan.dhcp.dns[]", "lan.dhcp.ntp[]", "lan.dhcp.hosts.ip", "uplink.gateway", "service.backends.address"}, Kind: LimitRule,
		Rule: "a unicast IPv4 address: not 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4 (multicast) or 255.255.255.255",
		Why:  "the kernel refuses such a gateway, and no client can use such a router, server or backend; an uplink's gateway must also be on its interface's subnet, which only the running daemon can see (it then leaves the uplink's routes out and logs why)"},
	{Keys: []string{"uplink.gateway6"}, Kind: LimitRule,
		Rule: "a link-local (fe80::/10) or global unicast IPv6 address without a zone; only with ipv6 = true",
		Why:  "the kernel refuses a multicast, loopback or unspecified next hop; the interface is the uplink's, so a zone would only repeat it"},
	{Keys: []string{"uplink.delegated_prefix"}, Kind: LimitRule,
		Rule: "an IPv6 prefix of length 1..64 without host bits, global unicast or unique local, overlapping no other uplink's; only with ipv6 = true and [lan.ipv6] mode prefix or npt",
		Why:  "a LAN is a /64, so a delegation is at least one; two uplinks cannot own the same addresses"},
	{Keys: []string{"lan.ipv6.prefix"}, Kind: LimitRule,
		Rule: "an IPv6 /64 without host bits, global unicast or unique local (fc00::/7), overlapping no uplink's delegated_prefix; mode npt only, and required there",
		Why:  "RFC 6296 rewrites the /64 network part and keeps the interface identifier; an inside prefix inside an outside one would be rewritten into itself"},
	{Keys: []string{"lan.ipv6.subnet"}, Kind: LimitCount, Min: 0, Max: 65535,
		Why: "which /64 of a delegation the LAN uses (mode npt); a /48, the largest usual delegation, holds 65536; it must also fit every configured delegated_prefix (a /56 holds 256), and an uplink whose learned delegation is too short for it is logged and left out"},
	{Keys: []string{"lan.ipv6.max_interval"}, Kind: LimitDuration, Min: 4 * sec, Max: 1800 * sec,
		Why: "RFC 4861 6.2.1 MaxRtrAdvInterval; a withdrawal does not wait for it (it leaves at once)"},
	{Keys: []string{"lan.ipv6.min_interval"}, Kind: LimitDuration, Min: 3 * sec, Max: 1350 * sec,
		Why: "RFC 4861 6.2.1 MinRtrAdvInterval: at least 3 s, at most 3/4 of max_interval (checked too)"},
	{Keys: []string{"lan.ipv6.router_lifetime"}, Kind: LimitDuration, Min: 4 * sec, Max: 9000 * sec,
		Why: "RFC 4861 6.2.1 AdvDefaultLifetime, at least max_interval (checked too); 0 is announced by uplinkd itself when no uplink has IPv6"},
	{Keys: []string{"lan.ipv6.rdnss", "lan.ipv6.dnssl"}, Kind: LimitCount, Min: 0, Max: 8,
		Why: "hosts use the first three servers (resolv.conf's limit); a few more cost nothing, many would make the advertisement large"},
	{Keys: []string{"lan.ipv6.rdnss[]"}, Kind: LimitRule,
		Rule: "a unicast IPv6 address (global, unique local or link-local) without a zone",
		Why:  "hosts send their queries to it; a link-local one is on the LAN interface"},
	{Keys: []string{"lan.dhcp.domain", "lan.ipv6.dnssl[]"}, Kind: LimitLength, Min: 1, Max: 253,
		Why: "the longest DNS name"},
	{Keys: []string{"lan.dhcp.unit"}, Kind: LimitLength, Min: 1, Max: 255,
		Why: "systemd's UNIT_NAME_MAX is 256 with the NUL"},
	{Keys: []string{"lan.dhcp.restart_interval"}, Kind: LimitDuration, Min: sec, Max: hour,
		Why: "a restart takes about a second; more than an hour leaves the LAN without DHCP that long"},
	{Keys: []string{"uplink.name", "rule.name", "service.name", "uplink.publish.name", "lan.dhcp.hosts.name"}, Kind: LimitLength, Min: 1, Max: MaxNameLen,
		Hint: "names go into firewall rule comments, chain and file names",
		Why:  "names go into nftables rule comments (256 bytes of user data with the text around them), chain names, state file names (escaped, 255 bytes) and hook environments; printable UTF-8, no control characters"},
	{Keys: []string{"uplink"}, Kind: LimitCount, Min: 0, Max: MaxUplinks,
		Why: "each uplink has 8 bits of the connection mark"},
	{Keys: []string{"uplink.rule_priority", "rule.priority"}, Kind: LimitCount, Min: 1, Max: 32765,
		Why: "0, 32766 and 32767 are the kernel's rules"},
	{Keys: []string{"uplink.tier"}, Kind: LimitCount, Min: 1, Max: MaxUplinks,
		Why: "a rank among at most 255 uplinks"},
	{Keys: []string{"uplink.weight", "service.backends.weight"}, Kind: LimitCount, Min: 1, Max: 256,
		Why: "a multipath next hop's weight is 8 bits (1..256) in the kernel; nftables and iptables split services in as many buckets"},
	{Keys: []string{"uplink.check.targets"}, Kind: LimitCount, Min: 1, Max: MaxProbeTargets,
		Why: "every target is probed every interval"},
	{Keys: []string{"uplink.check.targets[]"}, Kind: LimitLength, Min: 1, Max: 2048,
		Why: "an address, HOST:PORT or URL; longer URLs are refused by many servers"},
	{Keys: []string{"uplink.check.interval", "service.check.interval"}, Kind: LimitDuration, Min: 100 * ms, Max: hour,
		Hint: "a shorter one keeps a core busy with probes",
		Why:  "a probe round per interval: 1ns kept 1.7 cores busy and grew memory by 160 MB/s; more than an hour finds no failure"},
	{Keys: []string{"uplink.check.timeout", "service.check.timeout"}, Kind: LimitDuration, Min: 10 * ms, Max: minute,
		Why: "at most the interval, too"},
	{Keys: []string{"uplink.check.reliability"}, Kind: LimitCount, Min: 1, Max: MaxProbeTargets,
		Why: "at most the number of targets"},
	{Keys: []string{"uplink.check.down", "uplink.check.up", "service.check.down", "service.check.up"}, Kind: LimitCount, Min: 1, Max: 1000,
		Why: "rounds in a row; 1000 rounds of the shortest interval is 100 s"},
	{Keys: []string{"uplink.check.retries"}, Kind: LimitCount, Min: 0, Max: 5,
		Why: "extra probes to an unanswered target within one timeout; each is spaced by the target's RTT"},
	{Keys: []string{"uplink.check.hold_down"}, Kind: LimitDuration, Min: 0, Max: day,
		Why: "0 fails back at once; more than a day keeps a recovered uplink out of use"},
	{Keys: []string{"uplink.check.max_latency"}, Kind: LimitDuration, Min: ms, Max: minute,
		Why: "at most the timeout in practice: a slower answer counts as lost"},
	{Keys: []string{"uplink.check.warn_latency"}, Kind: LimitDuration, Min: ms, Max: minute,
		Why: "below max_latency when both are set: degraded comes before failed"},
	{Keys: []string{"uplink.check.degraded_weight"}, Kind: LimitCount, Min: 1, Max: 99,
		Why: "percent of the uplink's weight it keeps while degraded: 100 would change nothing, 0 is degraded = \"leave\""},
	{Keys: []string{"uplink.check.traffic_window"}, Kind: LimitDuration, Min: 100 * ms, Max: 10 * sec,
		Hint: "shorter windows mistake a slow reply for an outage and read the counters more often",
		Why:  "at most the interval, too: a longer window detects later than the probes themselves"},
	{Keys: []string{"uplink.reconnect.reconnect_after"}, Kind: LimitDuration, Min: sec, Max: day,
		Why: "how long an uplink is down before it is dialled again"},
	{Keys: []string{"uplink.reconnect.backoff", "uplink.reconnect.max_backoff"}, Kind: LimitDuration, Min: 100 * ms, Max: day,
		Why: "the pause between dials; max_backoff is at least backoff"},
	{Keys: []string{"uplink.reconnect.timeout", "uplink.reconnect.dial_timeout"}, Kind: LimitDuration, Min: sec, Max: hour,
		Why: "a command or dial that takes longer is stuck"},
	{Keys: []string{"uplink.reconnect.command[]", "uplink.reconnect.stop_command[]", "uplink.publish.command[]", "uplink.hook.command[]", "lan.dhcp.command[]"}, Kind: LimitLength, Min: 1, Max: 131071,
		Why: "each word; the kernel's MAX_ARG_STRLEN is 128 KiB with the NUL, and the first word is an absolute path"},
	{Keys: []string{"uplink.firewall.limit.hits", "service.limit.hits"}, Kind: LimitCount, Min: 1, Max: 1000000,
		Why: "the largest iptables hashlimit burst"},
	{Keys: []string{"uplink.firewall.limit.seconds", "service.limit.seconds"}, Kind: LimitCount, Min: 1, Max: 86400,
		Why: "and it must divide 86400: both backends count a rate per second, minute, hour or day"},
	{Keys: []string{"uplink.publish.ttl"}, Kind: LimitDuration, Min: sec, Max: 2147483647 * sec,
		Why: "whole seconds; RFC 2181 caps a TTL at 2^31-1 s"},
	{Keys: []string{"uplink.publish.settle"}, Kind: LimitDuration, Min: 0, Max: hour,
		Why: "how long a new address must stay before it is published"},
	{Keys: []string{"uplink.publish.min_interval"}, Kind: LimitDuration, Min: 0, Max: day,
		Why: "the least time between two updates"},
	{Keys: []string{"uplink.publish.refresh"}, Kind: LimitDuration, Min: 0, Max: 365 * day,
		Why: "0 never re-publishes an unchanged address; dyndns2 providers expire records after about 30 days"},
	{Keys: []string{"uplink.publish.timeout"}, Kind: LimitDuration, Min: sec, Max: 10 * minute,
		Why: "one update"},
	{Keys: []string{"uplink.publish.username"}, Kind: LimitLength, Min: 1, Max: 255,
		Why: "sent in an HTTP Basic header"},
	{Keys: []string{"uplink.hook.timeout"}, Kind: LimitDuration, Min: 100 * ms, Max: hour,
		Why: "when set; a hook that runs longer is killed"},
	{Keys: []string{"rule.mark"}, Kind: LimitCount, Min: 1, Max: UserMarkMask,
		Hint: "rule marks live in the low 16 bits of the packet mark",
		Why:  "the low 16 bits of the packet mark; the upper bits hold the uplink a connection started on"},
	{Keys: []string{"firewall.deny.source"}, Kind: LimitRule,
		Rule: "an IPv4 prefix that covers neither 127.0.0.1 nor a whole lan.networks prefix (so never 0.0.0.0/0); or, with an uplink with ipv6 = true, an IPv6 prefix that covers neither ::1, fe80::/10, the [lan.ipv6] prefix nor the LAN /64 of a delegated_prefix (so never ::/0)",
		Why:  "a deny drops input and forwarding from everywhere: covering the LAN or loopback would cut off the LAN and the host's own services (deny single LAN hosts instead)"},
	{Keys: []string{"ha.lost_uplink_weight", "uplink.ha.weight"}, Kind: LimitCount, Min: MinHAWeight, Max: 0,
		Why: "keepalived puts an instance into FAULT below -253"},
	{Keys: []string{"*"}, Kind: LimitRule,
		Rule: "every string: no NUL byte",
		Why:  "a NUL ends a name, path or argument where the kernel reads it"},
}

// limitIndex maps every key of KeyLimits to its row.
var limitIndex = func() map[string]*KeyLimit {
	m := map[string]*KeyLimit{}
	for i := range KeyLimits {
		for _, k := range KeyLimits[i].Keys {
			if m[k] != nil {
				panic("policy: key " + k + " twice in KeyLimits")
			}
			m[k] = &KeyLimits[i]
		}
	}
	return m
}()

// limitKey is path without array indices: "uplink[2].check.interval" is
// "uplink.check.interval", and an element of an array keeps "[]":
// "uplink[0].check.targets[1]" is "uplink.check.targets[]".
func limitKey(path string) string {
	elem := strings.HasSuffix(path, "]")
	if elem {
		path = path[:strings.LastIndexByte(path, '[')]
	}
	key := withoutIndexes(path)
	if elem {
		key += "[]"
	}
	return key
}

// limitOf returns the row of a key; a key without one is a bug in the
// loader, caught by the tests.
func limitOf(key string) *KeyLimit {
	lim := limitIndex[key]
	if lim == nil {
		panic("policy: no row in KeyLimits for " + key)
	}
	return lim
}

// RangeText is the range as the documentation and messages write it.
func (lim *KeyLimit) RangeText() string {
	switch lim.Kind {
	case LimitDuration:
		return fmtDuration(time.Duration(lim.Min)) + ".." + fmtDuration(time.Duration(lim.Max))
	case LimitCount:
		return strconv.FormatInt(lim.Min, 10) + ".." + strconv.FormatInt(lim.Max, 10)
	case LimitLength:
		return fmt.Sprintf("%d..%d bytes", lim.Min, lim.Max)
	}
	return lim.Rule
}

// fmtDuration writes a duration without the zero units time.Duration
// spells out: "1h", not "1h0m0s".
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// outOf reports a value outside its row's range at path.
func (l *loader) outOf(path string, lim *KeyLimit, got string) {
	msg := fmt.Sprintf("%s must be %s", pathKey(path), lim.RangeText())
	if lim.Hint != "" {
		msg += ": " + lim.Hint
	}
	l.errorf(path, "%s (got %s)", msg, got)
}

// duration checks a duration key against its row.
func (l *loader) duration(path string, d time.Duration) bool {
	lim := limitOf(limitKey(path))
	if int64(d) < lim.Min || int64(d) > lim.Max {
		l.outOf(path, lim, fmtDuration(d))
		return false
	}
	return true
}

// count checks an integer key against its row.
func (l *loader) count(path string, v int) bool {
	lim := limitOf(limitKey(path))
	if int64(v) < lim.Min || int64(v) > lim.Max {
		l.outOf(path, lim, strconv.Itoa(v))
		return false
	}
	return true
}

// countAt checks an integer key against its row's minimum and a maximum
// that depends on the rest of the file (at most the row's).
func (l *loader) countAt(path string, v int, hi int64) bool {
	lim := *limitOf(limitKey(path))
	lim.Max = min(lim.Max, hi)
	if int64(v) < lim.Min || int64(v) > lim.Max {
		l.outOf(path, &lim, strconv.Itoa(v))
		return false
	}
	return true
}

// length checks a string's length in bytes against the row of key (the
// row of path when key is ""); an empty string is left to required.
func (l *loader) length(path, key, v string) bool {
	if key == "" {
		key = limitKey(path)
	}
	lim := limitOf(key)
	if v != "" && (int64(len(v)) < lim.Min || int64(len(v)) > lim.Max) {
		l.outOf(path, lim, fmt.Sprintf("%d bytes", len(v)))
		return false
	}
	return true
}

// LimitsMarkdown renders KeyLimits as the table of docs/config-limits.md.
func LimitsMarkdown() string {
	var b strings.Builder
	b.WriteString("| Key | Range | Why |\n|---|---|---|\n")
	for _, lim := range KeyLimits {
		keys := slices.Clone(lim.Keys)
		for i, k := range keys {
			keys[i] = "`" + k + "`"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", strings.Join(keys, ", "), lim.RangeText(), lim.Why)
	}
	return b.String()
}
