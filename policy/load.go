package policy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2/unstable"
)

// Problem is one config error with its position.
type Problem struct {
	File      string
	Line, Col int
	Msg       string
}

// String formats the problem the way compilers do, so editors can jump to it.
func (p Problem) String() string {
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg)
}

// Problems is returned by Load and Parse when anything is wrong.
type Problems []Problem

// Error is one Problem per line, in file order.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads the config file, resolves table names from the iproute2
// databases, applies defaults and validates.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tables, err := LoadTables(DefaultTablePaths...)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, tables)
}

// Parse is Load on bytes with an explicit table-name map. On any problem it
// returns a nil Config and Problems.
func Parse(path string, data []byte, tables map[string]int) (*Config, error) {
	l := &loader{file: path, data: data, pos: map[string]int{}, bad: map[string]bool{}}
	cfg := &Config{Path: path, Tables: tables}
	if root := l.parse(); root != nil {
		l.decode(root, reflect.ValueOf(cfg).Elem(), "", "")
		l.validate(cfg)
	}
	if len(l.probs) > 0 {
		slices.SortStableFunc(l.probs, func(a, b Problem) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
		})
		return nil, l.probs
	}
	return cfg, nil
}

type loader struct {
	file  string
	data  []byte
	probs Problems
	// pos maps the path of every key present in the file, like
	// "uplink[1].check.targets[0]", to the byte offset of its value (of the
	// header, for a table), so that semantic problems point into the file.
	pos map[string]int
	// bad holds the paths of values that could not be decoded, and of keys
	// that an unknown key was probably meant to be. Validation says nothing
	// about them or below them: the mistake is already reported, and their
	// zero value would only be reported again as missing or out of range.
	bad map[string]bool
}

func (l *loader) problemAt(off int, format string, args ...any) {
	line, col := l.lineCol(off)
	l.probs = append(l.probs, Problem{File: l.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// lineCol turns a byte offset into a 1-based line and byte column, as
// go-toml and the Go tools count them.
func (l *loader) lineCol(off int) (int, int) {
	before := l.data[:off]
	return bytes.Count(before, []byte{'\n'}) + 1, off - bytes.LastIndexByte(before, '\n')
}

// ---- the positioned document tree ----

// tomlNode is one value of the document. Tables and arrays of tables are merged
// from all the expressions that contribute to them, as TOML defines.
type tomlNode struct {
	kind   unstable.Kind // a scalar kind, Array or Table
	off    int           // where the value (or the table's header) starts
	data   string        // scalar text; strings are unescaped
	items  []*tomlNode   // Array
	keys   []*tomlEntry  // Table, in document order
	origin tomlOrigin    // Array and Table
}

type tomlEntry struct {
	key string
	off int // where the key is written
	val *tomlNode
}

// tomlOrigin records how a table came to exist, which decides whether a later
// expression may still add to it.
type tomlOrigin int

const (
	originImplicit tomlOrigin = iota // only named on the way to a [header]; may still get one
	originHeader                     // defined by [header] or [[header]]
	originDotted                     // created by a dotted key
	originLiteral                    // an inline table or array value: closed
)

func (n *tomlNode) get(key string) *tomlEntry {
	for _, e := range n.keys {
		if e.key == key {
			return e
		}
	}
	return nil
}

func (n *tomlNode) add(key string, off int, val *tomlNode) {
	n.keys = append(n.keys, &tomlEntry{key: key, off: off, val: val})
}

// parse builds the document tree, or reports the syntax error and returns nil.
func (l *loader) parse() *tomlNode {
	root := &tomlNode{kind: unstable.Table, origin: originHeader}
	cur := root
	var p unstable.Parser
	p.Reset(l.data)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind == unstable.KeyValue {
			l.keyValue(cur, e)
		} else {
			cur = l.tableHeader(root, e)
		}
	}
	if err := p.Error(); err != nil {
		off := 0
		var perr *unstable.ParserError
		if errors.As(err, &perr) {
			// Highlight is a subslice of data: both end at the same place.
			off = max(0, min(cap(l.data)-cap(perr.Highlight), len(l.data)))
		}
		l.problemAt(off, "syntax error: %s", err)
		return nil
	}
	return root
}

func headerName(parts []*unstable.Node) string {
	names := make([]string, len(parts))
	for i, k := range parts {
		names[i] = string(k.Data)
	}
	return strings.Join(names, ".")
}

func keyParts(it unstable.Iterator) []*unstable.Node {
	var parts []*unstable.Node
	for it.Next() {
		parts = append(parts, it.Node())
	}
	return parts
}

// tableHeader handles [a.b] and [[a.b]] and returns the table that the following
// keys go into.
func (l *loader) tableHeader(root *tomlNode, h *unstable.Node) *tomlNode {
	parts := keyParts(h.Key())
	// Keys after a broken header are still parsed, into a table that is not
	// attached, so that one mistake is reported once.
	detached := &tomlNode{kind: unstable.Table, origin: originHeader}
	t := root
	for _, k := range parts[:len(parts)-1] {
		if t = l.descend(t, k, originImplicit); t == nil {
			return detached
		}
	}
	k := parts[len(parts)-1]
	name, keyOff := string(k.Data), int(k.Raw.Offset)
	// The header's position is its opening bracket: "[ a.b ]" or "[[a.b]]".
	off := int(parts[0].Raw.Offset)
	for l.data[off-1] == ' ' || l.data[off-1] == '\t' {
		off--
	}
	for off > 0 && l.data[off-1] == '[' {
		off--
	}
	e := t.get(name)
	if h.Kind == unstable.ArrayTable {
		if e == nil {
			t.add(name, keyOff, &tomlNode{kind: unstable.Array, off: off, origin: originHeader})
			e = t.get(name)
		} else if e.val.kind != unstable.Array || e.val.origin != originHeader {
			l.problemAt(keyOff, "cannot add to [[%s]]: it is already defined as something else", headerName(parts))
			return detached
		}
		el := &tomlNode{kind: unstable.Table, off: off, origin: originHeader}
		e.val.items = append(e.val.items, el)
		return el
	}
	if e == nil {
		n := &tomlNode{kind: unstable.Table, off: off, origin: originHeader}
		t.add(name, keyOff, n)
		return n
	}
	if e.val.kind == unstable.Table && e.val.origin == originImplicit {
		e.val.origin, e.val.off = originHeader, off
		return e.val
	}
	l.problemAt(keyOff, "table [%s] is already defined", headerName(parts))
	return detached
}

// descend follows one part of a dotted key or header name from t, creating
// the table if needed; how is the origin a new table gets.
func (l *loader) descend(t *tomlNode, k *unstable.Node, how tomlOrigin) *tomlNode {
	name := string(k.Data)
	e := t.get(name)
	if e == nil {
		n := &tomlNode{kind: unstable.Table, off: int(k.Raw.Offset), origin: how}
		t.add(name, int(k.Raw.Offset), n)
		return n
	}
	n := e.val
	switch {
	case how == originImplicit && n.kind == unstable.Array && n.origin == originHeader:
		return n.items[len(n.items)-1]
	// A dotted key may only extend tables made by dotted keys; a header
	// may pass through any table that is not a literal.
	case n.kind == unstable.Table && (n.origin == originDotted || how == originImplicit && n.origin != originLiteral):
		return n
	}
	l.problemAt(int(k.Raw.Offset), "%q is already defined and cannot be extended here", name)
	return nil
}

func (l *loader) keyValue(t *tomlNode, kv *unstable.Node) {
	parts := keyParts(kv.Key())
	for _, k := range parts[:len(parts)-1] {
		if t = l.descend(t, k, originDotted); t == nil {
			return
		}
	}
	k := parts[len(parts)-1]
	name := string(k.Data)
	if t.get(name) != nil {
		l.problemAt(int(k.Raw.Offset), "duplicate key %q", name)
		return
	}
	// Only whitespace and "=" separate the key from its value.
	start := int(k.Raw.Offset + k.Raw.Length)
	start += bytes.IndexByte(l.data[start:], '=') + 1
	for l.data[start] == ' ' || l.data[start] == '\t' {
		start++
	}
	val, _ := l.value(kv.Value(), start)
	t.add(name, int(k.Raw.Offset), val)
}

// value converts a value node that starts at offset start and returns it with
// the offset just past it. The parser gives no position for arrays, so the
// array's own start is passed in and its elements are found by skipping
// separators from there.
func (l *loader) value(v *unstable.Node, start int) (*tomlNode, int) {
	switch v.Kind {
	case unstable.Array:
		n := &tomlNode{kind: unstable.Array, off: start, origin: originLiteral}
		end := start + 1
		for it := v.Children(); it.Next(); {
			var item *tomlNode
			item, end = l.value(it.Node(), l.skipSeparators(end))
			n.items = append(n.items, item)
		}
		return n, l.skipSeparators(end) + 1
	case unstable.InlineTable:
		n := &tomlNode{kind: unstable.Table, off: int(v.Raw.Offset), origin: originLiteral}
		end := n.off + 1
		for it := v.Children(); it.Next(); {
			kv := it.Node()
			l.keyValue(n, kv)
			end = int(kv.Raw.Offset + kv.Raw.Length)
		}
		return n, l.skipSeparators(end) + 1
	default:
		return &tomlNode{kind: v.Kind, off: int(v.Raw.Offset), data: string(v.Data)}, int(v.Raw.Offset + v.Raw.Length)
	}
}

// skipSeparators skips what may stand between the elements of an array or
// inline table: whitespace, newlines, commas and comments.
func (l *loader) skipSeparators(off int) int {
	for off < len(l.data) {
		switch l.data[off] {
		case ' ', '\t', '\r', '\n', ',':
			off++
		case '#':
			if i := bytes.IndexByte(l.data[off:], '\n'); i >= 0 {
				off += i
			} else {
				off = len(l.data)
			}
		default:
			return off
		}
	}
	return off
}

// ---- decoding the tree into Config ----

var durationFieldType = reflect.TypeFor[Duration]()

// decode stores n into v, reporting unknown keys and wrong types. path is
// the position key ("uplink[1].check"); name is how the value is called in
// messages ("targets[0]").
func (l *loader) decode(n *tomlNode, v reflect.Value, path, name string) {
	l.pos[path] = n.off
	t := v.Type()
	switch {
	case t == durationFieldType:
		if n.kind != unstable.String {
			l.wrongType(n, path, name, t)
			return
		}
		d, err := time.ParseDuration(n.data)
		if err != nil {
			l.invalid(n, path, "%s must be a duration such as \"800ms\" or \"5m\" (got %q)", name, n.data)
			return
		}
		v.Set(reflect.ValueOf(Duration{d}))
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
	case t.Kind() == reflect.Uint32:
		i, ok := l.integer(n, path, name, t)
		switch {
		case !ok:
		case i < 0 || i > math.MaxUint32:
			l.invalid(n, path, "%s must be 0..%d (got %d)", name, uint32(math.MaxUint32), i)
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
	case t.Kind() == reflect.Interface: // Uplink.Table: a number or a name
		switch n.kind {
		case unstable.String:
			v.Set(reflect.ValueOf(n.data))
		case unstable.Integer:
			if i, ok := l.integer(n, path, name, t); ok {
				v.Set(reflect.ValueOf(int(i)))
			}
		default:
			l.wrongType(n, path, name, t)
		}
	default:
		panic("policy: config field of unsupported type " + t.String())
	}
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
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			keys = append(keys, tag)
			fields[tag] = i
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
		if ok {
			l.decode(e.val, v.Field(i), sub(e.key), e.key)
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

func (l *loader) wrongType(n *tomlNode, path, name string, want reflect.Type) {
	l.invalid(n, path, "%s must be %s, not %s", name, fieldTypeNoun(want), tomlKindNoun(n))
}

func (l *loader) invalid(n *tomlNode, path, format string, args ...any) {
	l.bad[path] = true
	l.problemAt(n.off, format, args...)
}

func fieldTypeNoun(t reflect.Type) string {
	switch {
	case t == durationFieldType:
		return `a duration string such as "30s"`
	case t.Kind() == reflect.Struct:
		return "a table"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "an array of tables"
	case t.Kind() == reflect.Slice:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(fieldTypeNoun(t.Elem()), "a "), "an ") + "s"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "a boolean"
	case t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Interface:
		return "a number or a table name"
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
	if strings.HasSuffix(path, "]") {
		return "[[" + b.String() + "]]"
	}
	return "[" + b.String() + "]"
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

// ---- defaults and semantic checks ----

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

// setDefault fills in a key the file does not set. A key set to its zero
// value keeps it, so that `down = 0` is reported instead of silently becoming 3.
func setDefault[T any](l *loader, path string, p *T, def T) {
	if !l.set(path) {
		*p = def
	}
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

func (l *loader) oneOf(path, v string, allowed ...string) bool {
	if slices.Contains(allowed, v) {
		return true
	}
	l.errorf(path, "%s must be one of %s (got %q)", pathKey(path), strings.Join(allowed, ", "), v)
	return false
}

func (l *loader) choice(path string, v *string, def string, allowed ...string) {
	setDefault(l, path, v, def)
	l.oneOf(path, *v, allowed...)
}

func (l *loader) inRange(path string, v, lo, hi int) bool {
	if v < lo || v > hi {
		l.errorf(path, "%s must be %d..%d (got %d)", pathKey(path), lo, hi, v)
		return false
	}
	return true
}

func (l *loader) atLeast(path string, v, lo int) {
	if v < lo {
		l.errorf(path, "%s must be at least %d (got %d)", pathKey(path), lo, v)
	}
}

func (l *loader) positive(path string, d Duration) {
	if d.Duration <= 0 {
		l.errorf(path, "%s must be positive (got %s)", pathKey(path), d)
	}
}

func (l *loader) ports(path string, ports []int) {
	for i, p := range ports {
		l.inRange(fmt.Sprintf("%s[%d]", path, i), p, 1, 65535)
	}
}

// argv checks a command line: at least the program, and no empty words.
func (l *loader) argv(path string, argv []string, need bool) {
	if need || l.set(path) {
		l.required(path, len(argv) > 0)
	}
	for i, a := range argv {
		if a == "" {
			l.errorf(fmt.Sprintf("%s[%d]", path, i), "%s[%d] must not be empty", pathKey(path), i)
		}
	}
}

func (l *loader) absPath(path, v string) {
	if v != "" && !filepath.IsAbs(v) {
		l.errorf(path, "%s must be an absolute path (got %q)", pathKey(path), v)
	}
}

func (l *loader) iface(path, v string) {
	if len(v) > 15 || strings.ContainsAny(v, "/: \t") {
		l.errorf(path, "%s %q is not a valid interface name", pathKey(path), v)
	}
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

// isIPv4Net accepts an address or a prefix; host bits may be set, as in
// the "address/len" notation of ip(8).
func isIPv4Net(s string) bool {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return err == nil && p.Addr().Is4()
	}
	return isIPv4Addr(s)
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

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func isHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	p, perr := strconv.Atoi(port)
	return err == nil && host != "" && perr == nil && p >= 1 && p <= 65535
}

// probeTargetForms says, per probe method, what a target must look like.
var probeTargetForms = map[string]struct {
	valid func(string) bool
	want  string
}{
	"icmp": {isIPv4Addr, "an IPv4 address"},
	"tcp":  {isHostPort, "HOST:PORT"},
	"dns":  {func(s string) bool { return isIPv4Addr(s) || isIPv4Port(s) }, "an IPv4 address or IPv4:PORT"},
	"http": {isHTTPURL, "an http:// or https:// URL"},
}

var hookEventNames = []string{"link-down", "link-up", "addr-change", "probe-down", "probe-up", "down", "up", "reconnect", "publish"}

// validate applies defaults and checks everything the types cannot express.
func (l *loader) validate(c *Config) {
	l.daemon(&c.Daemon)
	l.lan(&c.LAN)
	// Mark rules and the uplinks' source rules share one priority space: the
	// kernel orders two rules of one priority by insertion, which uplinkd
	// does not control.
	priorities := map[string]string{}
	l.uplinks(c, priorities)
	l.rules(c, priorities)
	l.stickyPriorities(c, priorities)
	l.defaultRules(c, priorities)
	l.firewall(&c.Firewall)
	l.services(c)
}

// stickyPriorities checks that the per-uplink sticky rules (one priority per
// uplink from sticky_priority on) clash with no configured rule priority.
func (l *loader) stickyPriorities(c *Config, priorities map[string]string) {
	if len(c.Uplinks) > MaxUplinks {
		l.errorf(fmt.Sprintf("uplink[%d]", MaxUplinks), "at most %d uplinks fit in the connection mark (got %d)", MaxUplinks, len(c.Uplinks))
	}
	first := Int(c.Daemon.StickyPriority, DefaultStickyPriority)
	last := first + max(len(c.Uplinks), 1) - 1
	if !l.inRange("daemon.sticky_priority", first, 1, 32765-max(len(c.Uplinks), 1)+1) {
		return
	}
	for p := first; p <= last; p++ {
		if at, ok := priorities[strconv.Itoa(p)]; ok {
			l.errorf("daemon.sticky_priority", "the sticky connection rules use priorities %d..%d (sticky_priority), which clashes with rule priority %d at line %d",
				first, last, p, l.line(at))
			return
		}
	}
}

// defaultRules resolves default_table and checks that it and the two
// default-route rules (default_priority, default_priority+1) clash with no
// uplink table, configured rule priority or sticky rule.
func (l *loader) defaultRules(c *Config, priorities map[string]string) {
	c.DefaultTableID = DefaultTableID
	if c.Daemon.DefaultTable != nil {
		if c.DefaultTableID = l.tableID("daemon.default_table", c.Daemon.DefaultTable, c.Tables); c.DefaultTableID == 0 {
			return
		}
	}
	for i, u := range c.Uplinks {
		if u.TableID == c.DefaultTableID {
			path := "daemon.default_table"
			if !l.set(path) {
				path = fmt.Sprintf("uplink[%d].table", i)
			}
			l.errorf(path, "table %d is uplinkd's default table (default_table) and uplink %q's table; choose another", c.DefaultTableID, u.Name)
		}
	}
	first := Int(c.Daemon.DefaultPriority, DefaultPriority)
	if !l.inRange("daemon.default_priority", first, 1, 32764) {
		return
	}
	sticky := Int(c.Daemon.StickyPriority, DefaultStickyPriority)
	for _, p := range []int{first, first + 1} {
		if at, ok := priorities[strconv.Itoa(p)]; ok {
			l.errorf("daemon.default_priority", "the default-route rules use priorities %d and %d (default_priority), which clashes with rule priority %d at line %d",
				first, first+1, p, l.line(at))
			return
		}
		if p >= sticky && p < sticky+max(len(c.Uplinks), 1) {
			l.errorf("daemon.default_priority", "the default-route rules use priorities %d and %d (default_priority), which clashes with the sticky rules from sticky_priority %d", first, first+1, sticky)
			return
		}
	}
}

func (l *loader) daemon(d *Daemon) {
	setDefault(l, "daemon.control_socket", &d.ControlSocket, DefaultControlSocket)
	l.absPath("daemon.control_socket", d.ControlSocket)
	setDefault(l, "daemon.state_dir", &d.StateDir, DefaultStateDir)
	l.absPath("daemon.state_dir", d.StateDir)
	if d.DefaultMetric != nil {
		l.errorf("daemon.default_metric", "default_metric was removed in 0.3: uplinkd's default route now lives in its own table (default_table, default %d) behind `lookup main suppress_prefixlength 0`", DefaultTableID)
	}
	l.choice("daemon.log_level", &d.LogLevel, "info", "debug", "info", "warn", "error")
	l.choice("daemon.last_resort", &d.LastResort, "link", "link", "none")
	if d.MinSyncInterval.Duration < 0 {
		l.errorf("daemon.min_sync_interval", "min_sync_interval must not be negative (got %s)", d.MinSyncInterval)
	}
}

func (l *loader) lan(lan *LAN) {
	l.iface("lan.interface", lan.Interface)
	for i, n := range lan.Networks {
		if p, err := netip.ParsePrefix(n); err != nil || !p.Addr().Is4() {
			l.errorf(fmt.Sprintf("lan.networks[%d]", i), "networks[%d] must be an IPv4 prefix such as \"10.0.0.0/24\" (got %q)", i, n)
		}
	}
	if lan.DHCP == nil {
		return
	}
	d := lan.DHCP
	l.choice("lan.dhcp.mode", &d.Mode, "embedded", "embedded", "service", "off")
	if l.set("lan.dhcp.range") {
		if len(d.Range) != 2 || !isIPv4Addr(d.Range[0]) || !isIPv4Addr(d.Range[1]) {
			l.errorf("lan.dhcp.range", "range must be two IPv4 addresses, first and last (got %q)", d.Range)
		} else if netip.MustParseAddr(d.Range[0]).Compare(netip.MustParseAddr(d.Range[1])) > 0 {
			l.errorf("lan.dhcp.range", "range starts after it ends (%s > %s)", d.Range[0], d.Range[1])
		}
	}
	names, macs, ips := map[string]string{}, map[string]string{}, map[string]string{}
	for i, h := range d.Hosts {
		p := fmt.Sprintf("lan.dhcp.hosts[%d]", i)
		if h.Name != "" {
			l.unique(names, h.Name, p+".name", fmt.Sprintf("host name %q", h.Name))
		}
		if l.required(p+".mac", h.MAC != "") {
			if mac, ok := canonicalMAC(h.MAC); ok {
				l.unique(macs, mac, p+".mac", "host mac "+mac)
			} else {
				l.errorf(p+".mac", "mac must be a MAC address such as \"dc:a6:32:90:31:cc\" (got %q)", h.MAC)
			}
		}
		if l.required(p+".ip", h.IP != "") {
			if isIPv4Addr(h.IP) {
				l.unique(ips, h.IP, p+".ip", fmt.Sprintf("host ip %s", h.IP))
			} else {
				l.errorf(p+".ip", "ip must be an IPv4 address (got %q)", h.IP)
			}
		}
	}
	setDefault(l, "lan.dhcp.lease", &d.Lease, Duration{time.Hour})
	l.positive("lan.dhcp.lease", d.Lease)
	for i, s := range d.DNS {
		if !isIPv4Addr(s) {
			l.errorf(fmt.Sprintf("lan.dhcp.dns[%d]", i), "dns[%d] must be an IPv4 address (got %q)", i, s)
		}
	}
}

// inferUplinkKind guesses an uplink's kind from the usual interface names.
func inferUplinkKind(iface string) string {
	switch {
	case strings.HasPrefix(iface, "ppp"):
		return KindPPP
	case strings.HasPrefix(iface, "wl"):
		return KindWLAN
	default:
		return KindEthernet
	}
}

func (l *loader) uplinks(c *Config, priorities map[string]string) {
	names, ifaces, tables := map[string]string{}, map[string]string{}, map[string]string{}
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		p := fmt.Sprintf("uplink[%d]", i)
		if l.required(p+".name", u.Name != "") {
			l.unique(names, u.Name, p+".name", fmt.Sprintf("uplink name %q", u.Name))
		}
		setDefault(l, p+".interface", &u.Interface, u.Name)
		switch {
		case u.Interface != "":
			l.iface(p+".interface", u.Interface)
			l.unique(ifaces, u.Interface, p+".interface", fmt.Sprintf("interface %q", u.Interface))
		case l.set(p + ".interface"):
			l.errorf(p+".interface", "interface must not be empty")
		}
		l.choice(p+".kind", &u.Kind, inferUplinkKind(u.Interface), KindPPP, KindWLAN, KindEthernet)
		if u.TableID = l.tableID(p+".table", u.Table, c.Tables); u.TableID != 0 {
			l.unique(tables, strconv.Itoa(u.TableID), p+".table", fmt.Sprintf("table %d", u.TableID))
		}
		if l.required(p+".rule_priority", l.set(p+".rule_priority")) && l.inRange(p+".rule_priority", u.RulePriority, 1, 32765) {
			l.unique(priorities, strconv.Itoa(u.RulePriority), p+".rule_priority", fmt.Sprintf("rule priority %d", u.RulePriority))
		}
		if u.Gateway != "" && !isIPv4Addr(u.Gateway) {
			l.errorf(p+".gateway", "gateway must be empty or an IPv4 address (got %q)", u.Gateway)
		}
		l.choice(p+".snat", &u.SNAT, "snat", "snat", "masquerade", "off")
		if u.Tier != nil {
			l.atLeast(p+".tier", *u.Tier, 1)
		}
		if u.Weight != nil {
			l.inRange(p+".weight", *u.Weight, 1, 256)
		}
		l.choice(p+".rp_filter", &u.RPFilter, "loose", "off", "loose", "strict")
		if u.Check != nil {
			l.check(p+".check", u.Check)
		}
		if u.Reconnect != nil {
			l.reconnect(p+".reconnect", u.Reconnect, u.Kind)
		}
		if u.Firewall != nil {
			l.uplinkFirewall(p+".firewall", u.Firewall)
		}
		for j := range u.Publish {
			l.publish(fmt.Sprintf("%s.publish[%d]", p, j), &u.Publish[j])
		}
		for j, h := range u.Hooks {
			l.hook(fmt.Sprintf("%s.hook[%d]", p, j), h)
		}
	}
}

// tableID resolves `table` to a number, or reports why it cannot and
// returns 0.
func (l *loader) tableID(path string, table any, names map[string]int) int {
	var id int
	desc := ""
	switch t := table.(type) {
	case nil:
		l.required(path, false)
		return 0
	case int:
		id, desc = t, strconv.Itoa(t)
	case string:
		n, err := strconv.Atoi(t)
		if err != nil {
			var ok bool
			if n, ok = names[t]; !ok {
				l.errorf(path, "unknown table name %q (not in rt_tables)", t)
				return 0
			}
		}
		id, desc = n, fmt.Sprintf("%q (%d)", t, n)
	}
	switch {
	case id >= 253 && id <= 255:
		l.errorf(path, "table %s is reserved for the kernel (253 default, 254 main, 255 local)", desc)
	case id < 1 || id > math.MaxInt32:
		l.errorf(path, "table must be 1..%d (got %s)", math.MaxInt32, desc)
	default:
		return id
	}
	return 0
}

func (l *loader) check(p string, c *Check) {
	l.choice(p+".method", &c.Method, "icmp", "icmp", "tcp", "dns", "http")
	l.required(p+".targets", len(c.Targets) > 0)
	if form, ok := probeTargetForms[c.Method]; ok {
		for i, t := range c.Targets {
			if !form.valid(t) {
				l.errorf(fmt.Sprintf("%s.targets[%d]", p, i), "targets[%d] must be %s for method %q (got %q)", i, form.want, c.Method, t)
			}
		}
	}
	setDefault(l, p+".interval", &c.Interval, Duration{DefaultCheckInterval})
	l.positive(p+".interval", c.Interval)
	setDefault(l, p+".timeout", &c.Timeout, Duration{DefaultCheckTimeout})
	l.positive(p+".timeout", c.Timeout)
	if c.Timeout.Duration > c.Interval.Duration {
		// Point at what the user wrote: a default timeout is not the mistake.
		at := p + ".timeout"
		if !l.set(at) {
			at = p + ".interval"
		}
		l.errorf(at, "timeout %s must not exceed interval %s", c.Timeout, c.Interval)
	}
	setDefault(l, p+".reliability", &c.Reliability, DefaultCheckReliability)
	l.inRange(p+".reliability", c.Reliability, 1, max(len(c.Targets), 1))
	setDefault(l, p+".down", &c.Down, DefaultCheckDown)
	l.atLeast(p+".down", c.Down, 1)
	setDefault(l, p+".up", &c.Up, DefaultCheckUp)
	l.atLeast(p+".up", c.Up, 1)
	// 0s is allowed: fail back at once.
	setDefault(l, p+".hold_down", &c.HoldDown, Duration{DefaultCheckHoldDown})
	if c.HoldDown.Duration < 0 {
		l.errorf(p+".hold_down", "hold_down must not be negative (got %s)", c.HoldDown)
	}
	if c.MaxLoss != nil && !(*c.MaxLoss >= 0 && *c.MaxLoss <= 1) {
		l.errorf(p+".max_loss", "max_loss must be between 0 and 1 (got %v)", *c.MaxLoss)
	}
	if l.set(p + ".max_latency") {
		l.positive(p+".max_latency", c.MaxLatency)
	}
}

func (l *loader) reconnect(p string, r *Reconnect, kind string) {
	// The default commands come from hooks.DefaultCommands, at run time.
	if r.Peer != "" && kind != KindPPP {
		l.errorf(p+".peer", "peer is only used by kind %q; set command instead", KindPPP)
	}
	l.argv(p+".command", r.Command, false)
	l.argv(p+".stop_command", r.StopCommand, false)
	setDefault(l, p+".reconnect_after", &r.ReconnectAfter, Duration{10 * time.Second})
	l.positive(p+".reconnect_after", r.ReconnectAfter)
	setDefault(l, p+".backoff", &r.Backoff, Duration{5 * time.Second})
	l.positive(p+".backoff", r.Backoff)
	setDefault(l, p+".max_backoff", &r.MaxBackoff, Duration{5 * time.Minute})
	l.positive(p+".max_backoff", r.MaxBackoff)
	if r.MaxBackoff.Duration < r.Backoff.Duration {
		l.errorf(p+".max_backoff", "max_backoff %s must not be less than backoff %s", r.MaxBackoff, r.Backoff)
	}
	setDefault(l, p+".timeout", &r.Timeout, Duration{30 * time.Second})
	l.positive(p+".timeout", r.Timeout)
}

func (l *loader) uplinkFirewall(p string, f *UplinkFirewall) {
	for i, a := range f.Allow {
		q := fmt.Sprintf("%s.allow[%d]", p, i)
		if l.required(q+".proto", a.Proto != "") {
			l.oneOf(q+".proto", a.Proto, "tcp", "udp", "sctp")
		}
		l.required(q+".ports", len(a.Ports) > 0)
		l.ports(q+".ports", a.Ports)
	}
	for i, lim := range f.Limit {
		q := fmt.Sprintf("%s.limit[%d]", p, i)
		if l.required(q+".proto", lim.Proto != "") {
			l.oneOf(q+".proto", lim.Proto, "tcp", "udp", "sctp")
		}
		if l.required(q+".port", l.set(q+".port")) {
			l.inRange(q+".port", lim.Port, 1, 65535)
		}
		if l.required(q+".hits", l.set(q+".hits")) {
			l.atLeast(q+".hits", lim.Hits, 1)
		}
		if l.required(q+".seconds", l.set(q+".seconds")) {
			l.atLeast(q+".seconds", lim.Seconds, 1)
		}
	}
	for i, t := range f.ICMPTypes {
		l.inRange(fmt.Sprintf("%s.icmp_types[%d]", p, i), t, 0, 255)
	}
}

func (l *loader) publish(p string, pub *Publish) {
	if l.required(p+".kind", pub.Kind != "") && l.oneOf(p+".kind", pub.Kind, "command", "dyndns2", "rfc2136") {
		switch pub.Kind {
		case "command":
			l.argv(p+".command", pub.Command, true)
		case "dyndns2":
			if l.required(p+".server", pub.Server != "") && !isHTTPURL(pub.Server) {
				l.errorf(p+".server", "server must be an http:// or https:// URL (got %q)", pub.Server)
			}
			l.required(p+".hostname", pub.Hostname != "")
		case "rfc2136":
			l.required(p+".server", pub.Server != "")
			l.required(p+".hostname", pub.Hostname != "")
		}
	}
	l.absPath(p+".password_file", pub.PasswordFile)
	l.absPath(p+".key_file", pub.KeyFile)
}

func (l *loader) hook(p string, h Hook) {
	l.required(p+".on", len(h.On) > 0)
	for i, ev := range h.On {
		l.oneOf(fmt.Sprintf("%s.on[%d]", p, i), ev, hookEventNames...)
	}
	l.argv(p+".command", h.Command, true)
	if l.set(p + ".timeout") {
		l.positive(p+".timeout", h.Timeout)
	}
}

func (l *loader) rules(c *Config, priorities map[string]string) {
	names, marks := map[string]string{}, map[uint32]int{}
	for i, r := range c.Rules {
		p := fmt.Sprintf("rule[%d]", i)
		if l.required(p+".name", r.Name != "") {
			l.unique(names, r.Name, p+".name", fmt.Sprintf("rule name %q", r.Name))
		}
		if l.required(p+".uplink", r.Uplink != "") && c.UplinkByName(r.Uplink) == nil {
			l.errorf(p+".uplink", "unknown uplink %q", r.Uplink)
		}
		if l.required(p+".mark", l.set(p+".mark")) {
			j, seen := marks[r.Mark]
			switch {
			case r.Mark == 0:
				l.errorf(p+".mark", "mark must not be 0 (unmarked traffic has mark 0)")
			case !seen:
				marks[r.Mark] = i
			case c.Rules[j].Uplink != r.Uplink:
				l.errorf(p+".mark", "mark %d already sends traffic via uplink %q (rule %q)", r.Mark, c.Rules[j].Uplink, c.Rules[j].Name)
			}
		}
		if l.required(p+".priority", l.set(p+".priority")) && l.inRange(p+".priority", r.Priority, 1, 32765) {
			l.unique(priorities, strconv.Itoa(r.Priority), p+".priority", fmt.Sprintf("rule priority %d", r.Priority))
		}
		for j, s := range r.Source {
			if !isIPv4Net(s) {
				l.errorf(fmt.Sprintf("%s.source[%d]", p, j), "source[%d] must be an IPv4 address or prefix (got %q)", j, s)
			}
		}
		for j, s := range r.Dest {
			if !isIPv4Net(s) {
				l.errorf(fmt.Sprintf("%s.destination[%d]", p, j), "destination[%d] must be an IPv4 address or prefix (got %q)", j, s)
			}
		}
		if r.Proto != "" || l.set(p+".proto") {
			l.oneOf(p+".proto", r.Proto, "tcp", "udp")
		} else if len(r.Ports) > 0 {
			l.errorf(p+".ports", "ports need proto = \"tcp\" or \"udp\"")
		}
		l.ports(p+".ports", r.Ports)
		if r.UID != nil {
			l.atLeast(p+".uid", *r.UID, 0)
		}
		if r.GID != nil {
			l.atLeast(p+".gid", *r.GID, 0)
		}
		l.iface(p+".in_interface", r.InIface)
	}
}

func (l *loader) firewall(f *Firewall) {
	l.choice("firewall.backend", &f.Backend, "nftables", "nftables", "iptables")
	l.choice("firewall.iptables_variant", &f.IPTablesVariant, "auto", "auto", "legacy", "nft")
	l.choice("firewall.input_policy", &f.InputPolicy, "accept", "accept", "drop")
	l.choice("firewall.forward_policy", &f.ForwardPolicy, "accept", "accept", "drop")
	for i := range f.Deny {
		d := &f.Deny[i]
		p := fmt.Sprintf("firewall.deny[%d]", i)
		if d.Source == "" && d.MAC == "" {
			l.errorf(p, "deny needs a source or a mac")
		}
		if d.Source != "" && !isIPv4Net(d.Source) {
			l.errorf(p+".source", "source must be an IPv4 address or prefix (got %q)", d.Source)
		}
		if _, ok := canonicalMAC(d.MAC); d.MAC != "" && !ok {
			l.errorf(p+".mac", "mac must be a MAC address such as \"dc:a6:32:90:31:cc\" (got %q)", d.MAC)
		}
		l.choice(p+".action", &d.Action, "drop", "reject", "drop")
	}
}

func (l *loader) services(c *Config) {
	names := map[string]string{}
	for i := range c.Services {
		s := &c.Services[i]
		p := fmt.Sprintf("service[%d]", i)
		if l.required(p+".name", s.Name != "") {
			l.unique(names, s.Name, p+".name", fmt.Sprintf("service name %q", s.Name))
		}
		l.required(p+".uplinks", len(s.Uplinks) > 0)
		for j, u := range s.Uplinks {
			if c.UplinkByName(u) == nil {
				l.errorf(fmt.Sprintf("%s.uplinks[%d]", p, j), "unknown uplink %q", u)
			}
		}
		l.choice(p+".proto", &s.Proto, "tcp", "tcp", "udp")
		if l.required(p+".port", l.set(p+".port")) {
			l.inRange(p+".port", s.Port, 1, 65535)
		}
		l.required(p+".backends", len(s.Backends) > 0)
		for j, b := range s.Backends {
			if !isIPv4Port(b) {
				l.errorf(fmt.Sprintf("%s.backends[%d]", p, j), "backends[%d] must be IPv4:PORT (got %q)", j, b)
			}
		}
		l.choice(p+".balance", &s.Balance, "source-hash", "weighted", "source-hash")
	}
}
