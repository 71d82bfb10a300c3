package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"syscall"
	"time"
)

// The DNS probe is hand-built rather than taken from a DNS library: it sends
// one fixed 17-byte question and only needs the response header, which does
// not justify a dependency.

// dnsProber sends ". IN A" (recursion desired) to the target and waits for
// any response to it.
type dnsProber struct{ d *dialer }

const (
	dnsHeaderLen = 12
	dnsTypeA     = 1
	dnsClassIN   = 1
	dnsFlagQR    = 0x8000
	dnsFlagRD    = 0x0100
)

// dnsQuery builds the question ". IN A" with the given ID. The root name is
// chosen because every resolver can answer it from cache and the answer
// (NODATA plus the root SOA) is small.
func dnsQuery(id uint16) []byte {
	b := make([]byte, dnsHeaderLen, dnsHeaderLen+5)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], dnsFlagRD)
	binary.BigEndian.PutUint16(b[4:], 1) // QDCOUNT
	b = append(b, 0)                     // the root name: one empty label
	b = binary.BigEndian.AppendUint16(b, dnsTypeA)
	b = binary.BigEndian.AppendUint16(b, dnsClassIN)
	return b
}

// dnsResponse reports whether b answers the query with this ID, and its
// rcode. A message with another ID (a late answer to an earlier probe) is not
// an answer; one that claims the ID but does not echo the question is
// malformed (or forged) and an error.
func dnsResponse(b []byte, id uint16) (ok bool, rcode int, err error) {
	if len(b) < dnsHeaderLen {
		return false, 0, nil
	}
	if binary.BigEndian.Uint16(b[0:]) != id {
		return false, 0, nil
	}
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&dnsFlagQR == 0 {
		return false, 0, errors.New("DNS message with our ID is not a response")
	}
	rcode = int(flags & 0xf)
	// Servers may answer FORMERR/NOTIMP without the question section.
	if qd := binary.BigEndian.Uint16(b[4:]); qd != 0 {
		q := b[dnsHeaderLen:]
		if qd != 1 || len(q) < 5 || q[0] != 0 ||
			binary.BigEndian.Uint16(q[1:]) != dnsTypeA || binary.BigEndian.Uint16(q[3:]) != dnsClassIN {
			return false, 0, errors.New("DNS response does not echo the question")
		}
	}
	return true, rcode, nil
}

func (p *dnsProber) probe(ctx context.Context, t *target, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	c, _, err := p.d.dial(ctx, "udp", netip.AddrPortFrom(t.addr, t.port))
	if err != nil {
		return 0, fmt.Errorf("open UDP socket: %w", err)
	}
	defer c.Close()
	// Unblocks the read at shutdown; the deadline covers the timeout.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("set read deadline: %w", err)
	}

	id := uint16(rand.Uint32())
	start := time.Now()
	if _, err := c.Write(dnsQuery(id)); err != nil {
		return 0, fmt.Errorf("send query: %w", err)
	}
	buf := make([]byte, 1232) // the EDNS-era safe UDP size; we send no OPT, so 512 would do
	for {
		n, err := c.Read(buf)
		if err != nil {
			switch {
			case IsTimeout(ctx, err):
				return 0, errTimeout(timeout)
			case errors.Is(err, syscall.ECONNREFUSED):
				return 0, errors.New("port unreachable: no DNS server at target")
			}
			return 0, fmt.Errorf("read response: %w", err)
		}
		ok, _, err := dnsResponse(buf[:n], id)
		if err != nil {
			return 0, err
		}
		if ok {
			return time.Since(start), nil
		}
	}
}

func (p *dnsProber) close() error { return nil }
