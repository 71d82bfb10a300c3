package policy

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2/unstable"
)

// Layer 2 of the loader: decoding the tree into the typed Config by the
// exact toml tags, parsing addresses, prefixes, durations and table names
// on the way and recording where every key is written.

var (
	durationType = reflect.TypeFor[time.Duration]()
	addrType     = reflect.TypeFor[netip.Addr]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	addrPortType = reflect.TypeFor[netip.AddrPort]()
	backendType  = reflect.TypeFor[ServiceBackend]()
)

// decode stores n into v, reporting unknown keys and wrong types. path is
// the position key ("uplink[1].check"); name is how the value is called in
// messages ("targets[0]"). Addresses, prefixes and durations are parsed here,
// so that a malformed one is reported at the value that is wrong.
func (l *loader) decode(n *tomlNode, v reflect.Value, path, name string) {
	l.pos[path] = n.off
	t := v.Type()
	switch {
	case t == durationType:
		if n.kind != unstable.String {
			l.wrongType(n, path, name, t)
			return
		}
		d, err := time.ParseDuration(n.data)
		if err != nil {
			l.invalid(n, path, "%s must be a duration such as \"800ms\" or \"5m\" (got %q)", name, n.data)
			return
		}
		v.SetInt(int64(d))
	case t == addrType:
		if n.kind != unstable.String {
			l.wrongType(n, path, name, t)
			return
		}
		if n.data == "" {
			return // not set: gateway = "" is how the reference file spells the default
		}
		a, err := netip.ParseAddr(n.data)
		if strings.HasSuffix(path, ".gateway6") || strings.HasPrefix(path, "lan.ipv6.rdnss[") {
			// The IPv6 address keys; a zone would name an interface
			// the key's table already names.
			if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
				l.invalid(n, path, "%s must be an IPv6 address without a zone such as \"fe80::1\" (got %q)", name, n.data)
				return
			}
		} else if err != nil || !a.Is4() {
			l.invalid(n, path, "%s must be an IPv4 address (got %q)", name, n.data)
			return
		}
		v.Set(reflect.ValueOf(a))
	case t == prefixType:
		if n.kind != unstable.String {
			l.wrongType(n, path, name, t)
			return
		}
		if strings.HasSuffix(path, ".delegated_prefix") || path == "lan.ipv6.prefix" {
			l.decodePrefix6(n, v, path, name)
			return
		}
		p, ok := parseIPv4Net(n.data)
		if !ok && isDenySource(path) {
			// A deny source may be IPv6 too: it filters the IPv6 side of
			// the firewall (docs/ipv6.md).
			if p, ok = parseIPv6Net(n.data); !ok {
				l.invalid(n, path, "%s must be an IPv4 or IPv6 address or prefix such as \"10.0.0.0/24\" or \"2001:db8::/48\" (got %q)", name, n.data)
				return
			}
		}
		if !ok {
			l.invalid(n, path, "%s must be an IPv4 address or prefix such as \"10.0.0.0/24\" (got %q)", name, n.data)
			return
		}
		if !strings.Contains(n.data, "/") {
			l.bare[path] = true
		}
		v.Set(reflect.ValueOf(p))
	case t == addrPortType:
		if n.kind != unstable.String {
			l.wrongType(n, path, name, t)
			return
		}
		ap, err := netip.ParseAddrPort(n.data)
		if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
			l.invalid(n, path, "%s must be IPv4:PORT (got %q)", name, n.data)
			return
		}
		v.Set(reflect.ValueOf(ap))
	case t == backendType && n.kind == unstable.String:
		// The short form of a backend: its address, weight by default.
		l.decode(n, v.FieldByName("Address"), path+".address", name)
	case t == backendType && n.kind != unstable.Table:
		l.invalid(n, path, "%s must be \"IPv4:PORT\" or a table such as { address = \"10.0.0.2:22\", weight = 2 }, not %s", name, tomlKindNoun(n))
	case t.Kind() == reflect.Pointer:
		v.Set(reflect.New(t.Elem()))
		l.decode(n, v.Elem(), path, name)
	case t.Kind() == reflect.Struct:
		if n.kind != unstable.Table {
			l.wrongType(n, path, name, t)
			return
		}
		l.table(n, v, path)
	case t.Kind() == reflect.Slice:
		if n.kind != unstable.Array {
			l.wrongType(n, path, name, t)
			return
		}
		v.Set(reflect.MakeSlice(t, len(n.items), len(n.items)))
		for i, item := range n.items {
			l.decode(item, v.Index(i), fmt.Sprintf("%s[%d]", path, i), fmt.Sprintf("%s[%d]", name, i))
		}
	case t.Kind() == reflect.String:
		if n.kind != unstable.String {
			l.wrongType(n, path, name, t)
			return
		}
		if !l.plainString(n, path, name) {
			return
		}
		v.SetString(n.data)
	case t.Kind() == reflect.Bool:
		if n.kind != unstable.Bool {
			l.wrongType(n, path, name, t)
			return
		}
		v.SetBool(n.data == "true")
	case t.Kind() == reflect.Int:
		if i, ok := l.integer(n, path, name, t); ok {
			v.SetInt(i)
		}
	case t.Kind() == reflect.Uint8, t.Kind() == reflect.Uint16, t.Kind() == reflect.Uint32:
		// Ports are the only uint16 and are never 0; validation repeats the
		// same message for 0, so that both read alike.
		lo, hi := int64(0), int64(1)<<t.Bits()-1
		if t.Kind() == reflect.Uint16 {
			lo = 1
		}
		i, ok := l.integer(n, path, name, t)
		switch {
		case !ok:
		case i < 0 || i > hi:
			l.invalid(n, path, "%s must be %d..%d (got %d)", name, lo, hi, i)
		default:
			v.SetUint(uint64(i))
		}
	case t.Kind() == reflect.Float64:
		switch n.kind {
		case unstable.Integer:
			if i, ok := l.integer(n, path, name, t); ok {
				v.SetFloat(float64(i))
			}
		case unstable.Float:
			// Go takes underscores in decimal floats only with a base prefix.
			f, err := strconv.ParseFloat(strings.ReplaceAll(n.data, "_", ""), 64)
			if err != nil {
				l.invalid(n, path, "%s %s is out of range", name, n.data)
				return
			}
			v.SetFloat(f)
		default:
			l.wrongType(n, path, name, t)
		}
	default:
		panic("policy: config field of unsupported type " + t.String())
	}
}

// plainString reports a string the kernel or the system would cut short
// or refuse: one with a NUL byte (TOML allows "\u0000") or, through an
// escape, invalid UTF-8.
func (l *loader) plainString(n *tomlNode, path, name string) bool {
	switch {
	case strings.IndexByte(n.data, 0) >= 0:
		l.invalid(n, path, "%s must not contain a NUL byte", name)
		return false
	case !utf8.ValidString(n.data):
		l.invalid(n, path, "%s must be valid UTF-8", name)
		return false
	}
	return true
}

// tableNumber decodes `table`: a number, or a name from rt_tables (a string
// holding a number counts as the number).
func (l *loader) tableNumber(n *tomlNode, v reflect.Value, path, name string) {
	l.pos[path] = n.off
	var id int64
	desc := ""
	switch n.kind {
	case unstable.Integer:
		i, ok := l.integer(n, path, name, v.Type())
		if !ok {
			return
		}
		id, desc = i, strconv.FormatInt(i, 10)
	case unstable.String:
		i, err := strconv.ParseInt(n.data, 10, 64)
		if err != nil {
			num, ok := l.tables[n.data]
			if !ok {
				l.invalid(n, path, "unknown table name %q (not in rt_tables)", n.data)
				return
			}
			i = num
		}
		id, desc = i, fmt.Sprintf("%q (%d)", n.data, i)
	default:
		l.invalid(n, path, "%s must be a number or a table name, not %s", name, tomlKindNoun(n))
		return
	}
	switch {
	case id >= 253 && id <= 255:
		l.invalid(n, path, "table %s is reserved for the kernel (253 default, 254 main, 255 local)", desc)
	case id < 1 || id > math.MaxInt32:
		l.invalid(n, path, "table must be 1..%d (got %s)", math.MaxInt32, desc)
	default:
		v.SetInt(id)
	}
}

// parseIPv4Net accepts an IPv4 address (a /32) or prefix; host bits may be
// set, as in the "address/len" notation of ip(8).
func parseIPv4Net(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p, err == nil && p.Addr().Is4()
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, 32), true
}

// isDenySource reports whether path is a [[firewall.deny]] source.
func isDenySource(path string) bool {
	return strings.HasPrefix(path, "firewall.deny[") && strings.HasSuffix(path, ".source")
}

// parseIPv6Net accepts an IPv6 address (a /128) or prefix without a zone;
// host bits may be set, as in parseIPv4Net.
func parseIPv6Net(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p, err == nil && p.Addr().Is6() && !p.Addr().Is4In6()
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, 128), true
}

// decodePrefix6 parses the IPv6 prefix keys (delegated_prefix, [lan.ipv6]
// prefix): a prefix with its length, no zone, no host bits (a prefix with
// host bits set is most often an address pasted where its network was
// meant, and the kernel would route the network anyway).
func (l *loader) decodePrefix6(n *tomlNode, v reflect.Value, path, name string) {
	if n.data == "" {
		return // not set
	}
	p, err := netip.ParsePrefix(n.data)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		l.invalid(n, path, "%s must be an IPv6 prefix such as \"2001:db8:a::/56\" (got %q)", name, n.data)
		return
	}
	if p != p.Masked() {
		l.invalid(n, path, "%s %s has host bits set: the prefix is %s", name, n.data, p.Masked())
		return
	}
	v.Set(reflect.ValueOf(p))
}

func (l *loader) integer(n *tomlNode, path, name string, t reflect.Type) (int64, bool) {
	if n.kind != unstable.Integer {
		l.wrongType(n, path, name, t)
		return 0, false
	}
	// Base 0 understands TOML's 0x/0o/0b prefixes and underscores; the
	// parser has already refused leading zeros, which Go would read as octal.
	i, err := strconv.ParseInt(n.data, 0, 64)
	if err != nil {
		l.invalid(n, path, "%s %s is out of range", name, n.data)
		return 0, false
	}
	return i, true
}

// table decodes the keys of n into the struct v, by exact toml tag.
func (l *loader) table(n *tomlNode, v reflect.Value, path string) {
	t := v.Type()
	var keys []string
	fields := map[string]int{}
	tableKeys := map[string]bool{}
	for i := range t.NumField() {
		tag, opt, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if tag != "" && tag != "-" {
			keys = append(keys, tag)
			fields[tag] = i
			tableKeys[tag] = opt == "rt_tables"
		}
	}
	sub := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	for _, e := range n.keys {
		i, ok := fields[e.key]
		switch {
		case ok && tableKeys[e.key]:
			l.tableNumber(e.val, v.Field(i), sub(e.key), e.key)
			continue
		case ok:
			l.decode(e.val, v.Field(i), sub(e.key), e.key)
			continue
		}
		if why, ok := removedKeys[sub(e.key)]; ok {
			l.problemAt(e.off, "%s was removed in %s", e.key, why)
			continue
		}
		msg := fmt.Sprintf("unknown key %q", e.key)
		if path != "" {
			msg += " in " + tomlTableName(path)
		}
		if s := suggestKey(e.key, keys); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
			l.bad[sub(s)] = true
		}
		l.problemAt(e.off, "%s", msg)
	}
}

// removedKeys are keys earlier versions accepted, with the version that
// removed them and what replaces them, so an old file gets a useful error.
var removedKeys = map[string]string{
	"daemon.default_metric": "0.3: uplinkd's default route now lives in its own table (default_table) behind `lookup main suppress_prefixlength 0`, so no metric can make it lose to a foreign default route",
}

func (l *loader) wrongType(n *tomlNode, path, name string, want reflect.Type) {
	l.invalid(n, path, "%s must be %s, not %s", name, fieldTypeNoun(want), tomlKindNoun(n))
}

func (l *loader) invalid(n *tomlNode, path, format string, args ...any) {
	l.bad[path] = true
	l.problemAt(n.off, format, args...)
}

func fieldTypeNoun(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration string such as "30s"`
	case t == addrType, t == prefixType, t == addrPortType:
		return "a string"
	case t.Kind() == reflect.Struct:
		return "a table"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct && fieldTypeNoun(t.Elem()) == "a table":
		return "an array of tables"
	case t.Kind() == reflect.Slice:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(fieldTypeNoun(t.Elem()), "a "), "an ") + "s"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "a boolean"
	case t.Kind() == reflect.Float64:
		return "a number"
	default:
		return "an integer"
	}
}

func tomlKindNoun(n *tomlNode) string {
	switch n.kind {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		if n.origin == originHeader {
			return "an array of tables"
		}
		return "an array"
	case unstable.Table:
		return "a table"
	default:
		return "a date/time"
	}
}

// tomlTableName shows a path the way the table is written in TOML:
// "uplink[0].check" is [uplink.check], "uplink[0]" is [[uplink]].
func tomlTableName(path string) string {
	if strings.HasSuffix(path, "]") {
		return "[[" + withoutIndexes(path) + "]]"
	}
	return "[" + withoutIndexes(path) + "]"
}

// withoutIndexes drops the "[N]" element indexes of a path:
// "uplink[0].check" is "uplink.check".
func withoutIndexes(path string) string {
	var b strings.Builder
	skip := false
	for _, r := range path {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// suggestKey returns the known key the user most likely meant: the same key in
// another case, or one a typo or two away (fewer for short keys, where
// anything is two typos from anything).
func suggestKey(key string, known []string) string {
	best, bestDist := "", min(2, len(key)/3+1)+1
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return k
		}
		if d := editDistance(strings.ToLower(key), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
