package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ctnetlink constants (linux/netfilter/nfnetlink_conntrack.h); x/sys/unix
// does not carry them.
const (
	ipctnlMsgCtDelete   = 2
	ipctnlMsgCtGetStats = 5
	ctaMark             = 8
	ctaMarkMask         = 21
	ctaStatsGlobalCount = 1 // CTA_STATS_GLOBAL_ENTRIES
)

// nfConn is a raw, long-lived NETLINK_NETFILTER socket for the few requests
// google/nftables does not offer: the ruleset generation, a rule dump of one
// table, and conntrack deletion by mark.
type nfConn struct {
	c *netlink.Conn
}

func dialNF(netnsFd int) (*nfConn, error) {
	cfg := &netlink.Config{}
	if netnsFd > 0 {
		cfg.NetNS = netnsFd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("dial netfilter netlink: %w", err)
	}
	return &nfConn{c: c}, nil
}

func (n *nfConn) Close() error { return n.c.Close() }

// nfgenmsg is the 4-byte header of every nfnetlink message.
func nfgenmsg(family uint8) []byte { return []byte{family, unix.NFNETLINK_V0, 0, 0} }

func (n *nfConn) execute(subsys, msg uint16, family uint8, flags netlink.HeaderFlags, attrs []netlink.Attribute) ([]netlink.Message, error) {
	return n.executeV(subsys, msg, family, unix.NFNETLINK_V0, flags, attrs)
}

// executeV is execute with the nfgenmsg version: a conntrack flush honours
// the family only with a version other than 0 (0 keeps the old meaning,
// every family).
func (n *nfConn) executeV(subsys, msg uint16, family, version uint8, flags netlink.HeaderFlags, attrs []netlink.Attribute) ([]netlink.Message, error) {
	data := []byte{family, version, 0, 0}
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

// conntrackCount is the number of conntrack entries in the namespace.
// The kernel answers IPCTNL_MSG_CT_GET_STATS with one message flagged
// NLM_F_MULTI and no NLMSG_DONE after it, so netlink.Conn.Execute would wait
// for more forever; the reply is read with a single recvmsg instead.
func (n *nfConn) conntrackCount() (int, error) {
	req, err := n.c.Send(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | ipctnlMsgCtGetStats), Flags: netlink.Request},
		Data:   nfgenmsg(unix.AF_UNSPEC),
	})
	if err != nil {
		return 0, fmt.Errorf("conntrack stats: %w", err)
	}
	raw, err := n.c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("conntrack stats: %w", err)
	}
	if err := n.c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return 0, fmt.Errorf("conntrack stats: %w", err)
	}
	defer n.c.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	for {
		var nr int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			nr, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return 0, fmt.Errorf("conntrack stats: %w", err)
		}
		msgs, err := syscallMessages(buf[:nr])
		if err != nil {
			return 0, fmt.Errorf("conntrack stats: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Sequence != req.Header.Sequence {
				continue // a late reply to something else
			}
			if m.Header.Type == netlink.Error {
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return 0, fmt.Errorf("conntrack stats: %w", unix.Errno(-errno))
					}
				}
				continue
			}
			if len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				return 0, fmt.Errorf("conntrack stats: %w", err)
			}
			ad.ByteOrder = binary.BigEndian
			for ad.Next() {
				if ad.Type() == ctaStatsGlobalCount {
					return int(ad.Uint32()), nil
				}
			}
			return 0, errors.New("conntrack stats: no entry count in reply")
		}
	}
}

// syscallMessages splits one datagram into netlink messages.
func syscallMessages(b []byte) ([]netlink.Message, error) {
	var out []netlink.Message
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, errors.New("truncated netlink message")
		}
		var m netlink.Message
		if err := m.UnmarshalBinary(b[:l]); err != nil {
			return nil, err
		}
		out = append(out, m)
		b = b[min(nlmsgAlign(l), len(b)):]
	}
	return out, nil
}

func nlmsgAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// deleteConntrackByMark asks the kernel to delete every conntrack entry with
// (ct mark & mask) == mark (see clearConntrackByMark). The kernel does not
// report how many entries went, so the count is the drop in the table's
// entry count around the request: exact when nothing else creates or expires
// entries at the same moment, an estimate otherwise. The two counts are two
// more round trips, which is why the event path clears without them.
func (n *nfConn) deleteConntrackByMark(mark, mask uint32) (int, error) {
	if err := checkMarkMask(mark, mask); err != nil {
		return 0, err
	}
	before, err := n.conntrackCount()
	if err != nil {
		return 0, err
	}
	if err := n.clearConntrackByMark(mark, mask); err != nil {
		return 0, err
	}
	after, err := n.conntrackCount()
	if err != nil {
		return 0, err
	}
	return max(before-after, 0), nil
}

// clearConntrackByMark deletes every conntrack entry with (ct mark & mask)
// == mark in one request. An IPCTNL_MSG_CT_DELETE without a tuple is a
// flush, and CTA_MARK/CTA_MARK_MASK make it a filtered flush that runs
// entirely in the kernel: no dump, no per-entry round trip.
func (n *nfConn) clearConntrackByMark(mark, mask uint32) error {
	return n.clearConntrackByMarkFamily(mark, mask, unix.AF_UNSPEC)
}

// clearConntrackByMarkFamily is clearConntrackByMark limited to one
// address family (AF_UNSPEC: all): the kernel's filtered flush skips
// entries of another family.
func (n *nfConn) clearConntrackByMarkFamily(mark, mask uint32, family uint8) error {
	if err := checkMarkMask(mark, mask); err != nil {
		return err
	}
	version := uint8(unix.NFNETLINK_V0)
	if family != unix.AF_UNSPEC {
		version = 1
	}
	_, err := n.executeV(unix.NFNL_SUBSYS_CTNETLINK, ipctnlMsgCtDelete, family, version, netlink.Acknowledge,
		[]netlink.Attribute{
			{Type: ctaMark, Data: binary.BigEndian.AppendUint32(nil, mark)},
			{Type: ctaMarkMask, Data: binary.BigEndian.AppendUint32(nil, mask)},
		})
	if err != nil {
		return fmt.Errorf("conntrack delete mark %#x/%#x: %w", mark, mask, err)
	}
	return nil
}

func checkMarkMask(mark, mask uint32) error {
	if mask == 0 {
		// A zero mask matches every entry: that would be a full flush.
		return errors.New("conntrack delete by mark: mask 0 would flush everything")
	}
	if mark&^mask != 0 {
		return fmt.Errorf("conntrack delete by mark: mark %#x has bits outside mask %#x", mark, mask)
	}
	return nil
}
