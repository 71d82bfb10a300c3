// Package rtattr is uplinkd's one rtnetlink attribute-decoding path: the
// watcher (which turns notifications into trigger events) and the kernel
// mirror (which keeps links, addresses, routes and rules) both walk a
// message's attributes with Walk.
//
// The Decoder reads attributes in place. It keeps the API and the checks of
// mdlayher/netlink's AttributeDecoder (the same validation up front, the
// same length checks on Uint8/Uint16/Uint32/Uint64, NULs trimmed by String,
// Nested), but that decoder copies every attribute's payload into a new
// slice, and Bytes copies it again: a link notification has some forty
// attributes, so on the path from a kernel event to a pass those copies were
// most of the watcher's and the mirror's allocations (docs/performance.md,
// "The hot path, third round"). Bytes here is a sub-slice of the message:
// valid as long as the message is, so a caller that keeps it copies it.
//
// Why not jsimonetti/rtnetlink's message types: the mirror needs what they
// do not decode (IFLA_AF_SPEC's IFLA_INET_CONF for rp_filter, and
// RTM_NEWNETCONF, which has no type there), so they would leave a second,
// hand-written path next to them; and on the same kernel messages they cost
// as much or more (BenchmarkDecode in internal/kernel: docs/performance.md,
// "rtnetlink decoding").
package rtattr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrShort is a message shorter than its family's fixed header.
var ErrShort = errors.New("message shorter than its fixed header")

// errInvalid is an attribute whose header or length does not fit.
var errInvalid = errors.New("netlink: invalid attribute; length too short or too large")

// SizeofFibRuleHdr is struct fib_rule_hdr's size (x/sys/unix has no
// constant for it).
const SizeofFibRuleHdr = 12

const (
	headerLen = 4
	// typeMask drops NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
	typeMask = 0x3fff
)

// Decoder walks a run of netlink attributes (see the package doc).
type Decoder struct {
	b    []byte // the attributes
	i    int    // the next one's offset
	typ  uint16
	data []byte
	err  error
}

// NewDecoder checks that every attribute header in b fits (as
// mdlayher/netlink's NewAttributeDecoder does) and returns a decoder
// before the first attribute.
func NewDecoder(b []byte) (*Decoder, error) {
	for i := 0; i < len(b); {
		if len(b[i:]) < headerLen {
			return nil, errInvalid
		}
		i += align(max(int(binary.NativeEndian.Uint16(b[i:])), headerLen))
	}
	return &Decoder{b: b}, nil
}

func align(n int) int { return (n + headerLen - 1) &^ (headerLen - 1) }

// Next moves to the next attribute; false at the end or after an error.
func (d *Decoder) Next() bool {
	if d.err != nil || d.i >= len(d.b) {
		return false
	}
	b := d.b[d.i:]
	if len(b) < headerLen {
		d.err = errInvalid
		return false
	}
	l := int(binary.NativeEndian.Uint16(b))
	switch {
	case l > len(b), l != 0 && l < headerLen:
		d.err = errInvalid
		return false
	case l == 0: // no data; skip the header
		d.data = b[headerLen:headerLen]
		d.i += headerLen
	default:
		d.data = b[headerLen:l:l]
		d.i += align(l)
	}
	d.typ = binary.NativeEndian.Uint16(b[2:])
	return true
}

// Type is the attribute's type without the nested and byte-order flags.
func (d *Decoder) Type() uint16 { return d.typ & typeMask }

// Err is the first error the decoder met.
func (d *Decoder) Err() error { return d.err }

// Bytes is the attribute's payload, in place: it is valid only as long as
// the message it was decoded from.
func (d *Decoder) Bytes() []byte { return d.data }

// String is the payload up to its NUL terminator(s).
func (d *Decoder) String() string {
	if d.err != nil {
		return ""
	}
	return string(bytes.TrimRight(d.data, "\x00"))
}

// Uint8 is a one-byte payload; any other length is an error.
func (d *Decoder) Uint8() uint8 {
	if !d.sized(1, "uint8") {
		return 0
	}
	return d.data[0]
}

// Uint16 is a two-byte payload in native byte order.
func (d *Decoder) Uint16() uint16 {
	if !d.sized(2, "uint16") {
		return 0
	}
	return binary.NativeEndian.Uint16(d.data)
}

// Uint32 is a four-byte payload in native byte order.
func (d *Decoder) Uint32() uint32 {
	if !d.sized(4, "uint32") {
		return 0
	}
	return binary.NativeEndian.Uint32(d.data)
}

// Uint64 is an eight-byte payload in native byte order.
func (d *Decoder) Uint64() uint64 {
	if !d.sized(8, "uint64") {
		return 0
	}
	return binary.NativeEndian.Uint64(d.data)
}

func (d *Decoder) sized(n int, what string) bool {
	if d.err != nil {
		return false
	}
	if len(d.data) != n {
		d.err = fmt.Errorf("netlink: attribute %d is not a %s; length: %d", d.Type(), what, len(d.data))
		return false
	}
	return true
}

// Nested decodes the payload as attributes with fn; an error of fn or of
// the nested decoder becomes d's.
func (d *Decoder) Nested(fn func(*Decoder) error) {
	if d.err != nil {
		return
	}
	nd, err := NewDecoder(d.data)
	if err == nil {
		if err = fn(nd); err == nil {
			err = nd.err
		}
	}
	if err != nil {
		d.err = err
	}
}

// Walk calls fn for each top-level attribute in b (the message after its
// fixed header) and returns the decoder's error. An empty b has none.
func Walk(b []byte, fn func(*Decoder)) error {
	if len(b) == 0 {
		return nil
	}
	d, err := NewDecoder(b)
	if err != nil {
		return err
	}
	for d.Next() {
		fn(d)
	}
	return d.err
}
