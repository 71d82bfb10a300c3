// Package rtattr is uplinkd's one rtnetlink attribute-decoding path: the
// watcher (which turns notifications into trigger events) and the kernel
// mirror (which keeps links, addresses, routes and rules) both walk a
// message's attributes with Walk, on mdlayher/netlink's AttributeDecoder.
//
// Why not jsimonetti/rtnetlink's message types: the mirror needs what they
// do not decode (IFLA_AF_SPEC's IFLA_INET_CONF for rp_filter, and
// RTM_NEWNETCONF, which has no type there), so they would leave a second,
// hand-written path next to them; and on the same kernel messages they cost
// as much or more (BenchmarkDecode in internal/kernel: docs/performance.md,
// "rtnetlink decoding"). Both libraries sit on the same AttributeDecoder.
package rtattr

import (
	"errors"

	"github.com/mdlayher/netlink"
)

// ErrShort is a message shorter than its family's fixed header.
var ErrShort = errors.New("message shorter than its fixed header")

// SizeofFibRuleHdr is struct fib_rule_hdr's size (x/sys/unix has no
// constant for it).
const SizeofFibRuleHdr = 12

// Walk calls fn for each top-level attribute in b (the message after its
// fixed header) and returns the decoder's error. An empty b has none.
func Walk(b []byte, fn func(*netlink.AttributeDecoder)) error {
	if len(b) == 0 {
		return nil
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	for ad.Next() {
		fn(ad)
	}
	return ad.Err()
}
