package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// nfConn holds the long-lived NETLINK_NETFILTER sockets for what
// google/nftables does not offer: a raw one for the ruleset generation, a
// rule dump of one table and the conntrack entry count (conntrack.go), and
// ti-mo/conntrack's for conntrack deletion by mark.
type nfConn struct {
	c  *netlink.Conn
	ct *conntrack.Conn
}

// dialNF opens both sockets in the namespace netnsFd refers to (see
// netnsx: <= 0 is the caller's own). A socket stays in the namespace it was
// created in, so later requests need no switch.
func dialNF(netnsFd int) (*nfConn, error) {
	cfg := &netlink.Config{NetNS: netnsx.FD(netnsFd)}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("dial netfilter netlink: %w", err)
	}
	ct, err := conntrack.Dial(cfg)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("dial conntrack netlink: %w", err)
	}
	n := &nfConn{c: c, ct: ct}
	// ctnetlink (nf_conntrack_netlink) is a module in Debian's kernels,
	// which the kernel loads by running modprobe on the first request for
	// it. Asking once now keeps that load out of the first failover's
	// conntrack delete: in the emulated test VM that delete took about
	// 0.3 s on a freshly booted system and the IPv6 failover waited for it.
	// An error here says nothing yet; the delete reports its own.
	_, _ = n.conntrackCount()
	return n, nil
}

func (n *nfConn) Close() error { return errors.Join(n.c.Close(), n.ct.Close()) }

// nfgenmsg is the 4-byte header of every nfnetlink message.
func nfgenmsg(family uint8) []byte { return []byte{family, unix.NFNETLINK_V0, 0, 0} }

func (n *nfConn) execute(subsys, msg uint16, family uint8, flags netlink.HeaderFlags, attrs []netlink.Attribute) ([]netlink.Message, error) {
	data := nfgenmsg(family)
	if len(attrs) > 0 {
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return nil, err
		}
		data = append(data, b...)
	}
	return n.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsys<<8 | msg), Flags: netlink.Request | flags},
		Data:   data,
	})
}

// nftGeneration returns the nftables ruleset generation: every committed
// transaction in the namespace increments it, which makes "nothing changed
// since I last looked" a single round trip.
func (n *nfConn) nftGeneration() (uint32, error) {
	msgs, err := n.execute(unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_GETGEN, unix.AF_UNSPEC, 0, nil)
	if err != nil {
		return 0, fmt.Errorf("nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("nftables generation: no id in reply")
}

// nftRuleComments dumps the rules of one table and returns, per chain, the
// comment of every rule in order.
func (n *nfConn) nftRuleComments(family uint8, table string) (map[string][]string, error) {
	msgs, err := n.execute(unix.NFNL_SUBSYS_NFTABLES, unix.NFT_MSG_GETRULE, family, netlink.Dump,
		[]netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(table + "\x00")}})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return map[string][]string{}, nil
		}
		return nil, fmt.Errorf("dump rules of %s: %w", table, err)
	}
	out := map[string][]string{}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("dump rules of %s: %w", table, err)
		}
		var tbl, chain, comment string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_TABLE:
				tbl = ad.String()
			case unix.NFTA_RULE_CHAIN:
				chain = ad.String()
			case unix.NFTA_RULE_USERDATA:
				comment, _ = userdata.GetString(ad.Bytes(), userdata.TypeComment)
			}
		}
		if tbl == table {
			out[chain] = append(out[chain], comment)
		}
	}
	return out, nil
}
