package policy

import (
	"bytes"
	"errors"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// Layer 1 of the loader: the positioned document tree. go-toml's unstable
// parser gives every key and value with its byte offset; this file merges
// the expressions into tables as TOML defines and reports syntax and
// redefinition errors.

// tomlNode is one value of the document. Tables and arrays of tables are merged
// from all the expressions that contribute to them, as TOML defines.
type tomlNode struct {
	kind   unstable.Kind // a scalar kind, Array or Table
	off    int           // where the value (or the table's header) starts
	data   string        // scalar text; strings are unescaped
	items  []*tomlNode   // Array
	keys   []*tomlEntry  // Table, in document order
	origin tomlOrigin    // Array and Table
	// index finds keys of a Table with many of them: a file of a hundred
	// thousand keys must not cost a scan per key.
	index map[string]*tomlEntry
}

// indexFrom is the number of keys from which a table keeps an index.
const indexFrom = 16

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
	if n.index != nil {
		return n.index[key]
	}
	for _, e := range n.keys {
		if e.key == key {
			return e
		}
	}
	return nil
}

func (n *tomlNode) add(key string, off int, val *tomlNode) {
	e := &tomlEntry{key: key, off: off, val: val}
	n.keys = append(n.keys, e)
	switch {
	case n.index != nil:
		n.index[key] = e
	case len(n.keys) >= indexFrom:
		n.index = make(map[string]*tomlEntry, 2*len(n.keys))
		for _, e := range n.keys {
			n.index[e.key] = e
		}
	}
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
