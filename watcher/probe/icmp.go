package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

const (
	icmpEchoReply    = 0
	icmpEchoRequest  = 8
	icmp6EchoRequest = 128
	icmp6EchoReply   = 129
	icmpHeaderLen    = 8
	cookieLen        = 8
	icmpChecksumOff  = 2 // offset of the checksum field
)

// icmpFilterMask is the ICMP_FILTER bitmap (a set bit drops that type): all
// types but echo reply, as the int32 setsockopt(2) passes on.
const icmpFilterMask = -1 &^ (1 << icmpEchoReply)

// nextID hands out echo identifiers. Raw ICMP sockets see every echo reply
// addressed to their bound address, so probers of one process must not share
// an identifier; starting from the PID keeps two daemons (e.g. in two
// namespaces of a test) apart as well.
var nextID atomic.Uint32

func init() { nextID.Store(uint32(os.Getpid()) * 7919) }

// forcePingSocket makes newICMP skip the raw socket; tests use it to cover
// the unprivileged fallback while running as root.
var forcePingSocket bool

// icmpProber owns one ICMP socket for its whole life and one reader
// goroutine that hands replies to the probes waiting for them.
type icmpProber struct {
	conn   net.PacketConn
	v6     bool // ICMPv6 (an IPv6 source or IPv6 targets)
	raw    bool // raw socket: our identifier; ping socket: the kernel's
	id     uint16
	cookie [cookieLen]byte
	done   chan struct{} // closed when the reader has exited

	mu      sync.Mutex
	seq     uint16
	pending map[uint16]*echo
}

// echo is one outstanding echo request.
type echo struct {
	dst   netip.Addr
	reply chan time.Time // arrival time; buffered: the reader never blocks on it
}

// newICMP opens the prober's socket: ICMPv6 when the source or the
// targets are IPv6 (Spec.parse has checked that they agree), else ICMP.
func newICMP(s Spec, v6 bool) (*icmpProber, error) {
	p := &icmpProber{
		v6:      v6,
		id:      uint16(nextID.Add(1)),
		pending: make(map[uint16]*echo),
		done:    make(chan struct{}),
	}
	if _, err := rand.Read(p.cookie[:]); err != nil {
		return nil, fmt.Errorf("random cookie: %w", err)
	}
	var rawErr error
	if !forcePingSocket {
		err := netnsx.Do(s.NetNS, func() error {
			var err error
			p.conn, err = openICMP(s, v6, true, p.id)
			return err
		})
		if err == nil {
			p.raw = true
		} else if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
			return nil, err
		} else {
			rawErr = err
		}
	}
	if p.conn == nil {
		// No CAP_NET_RAW: an unprivileged ping socket works when the
		// group is in net.ipv4.ping_group_range.
		err := netnsx.Do(s.NetNS, func() error {
			var err error
			p.conn, err = openICMP(s, v6, false, 0)
			return err
		})
		if err != nil {
			return nil, errors.Join(rawErr, err)
		}
	}
	go p.read()
	return p, nil
}

// openICMP creates, configures and binds an ICMP socket: SOCK_RAW when raw,
// else SOCK_DGRAM (a "ping" socket). It is built by hand rather than with
// x/net/icmp.ListenPacket because the device binding and the filters must be
// in place before the first reply can arrive.
func openICMP(s Spec, v6, raw bool, id uint16) (net.PacketConn, error) {
	typ, what := unix.SOCK_DGRAM, "ping"
	if raw {
		typ, what = unix.SOCK_RAW, "raw ICMP"
	}
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if v6 {
		family, proto, what = unix.AF_INET6, unix.IPPROTO_ICMPV6, what+"v6"
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("open %s socket: %w", what, err)
	}
	f := os.NewFile(uintptr(fd), what)
	defer f.Close() // FilePacketConn dups the descriptor
	if s.Iface != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, s.Iface); err != nil {
			return nil, fmt.Errorf("bind %s socket to device %s: %w", what, s.Iface, err)
		}
	}
	switch {
	case raw && v6:
		// A raw ICMPv6 socket sees the message without the IPv6 header;
		// the kernel computes the checksum (RFC 3542) on its own. One BPF
		// program keeps only echo replies with our identifier.
		if err := attachIDFilter6(fd, id); err != nil {
			return nil, err
		}
	case raw:
		// A raw ICMP socket gets a copy of every ICMP message for its
		// address. Filtering in the kernel, first by type (ICMP_FILTER:
		// set bits are dropped), then by our identifier (BPF), keeps
		// unrelated traffic from waking the reader at all.
		if err := unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, icmpFilterMask); err != nil {
			return nil, fmt.Errorf("set ICMP_FILTER: %w", err)
		}
		if err := attachIDFilter(fd, id); err != nil {
			return nil, err
		}
	}
	var sa unix.Sockaddr = &unix.SockaddrInet4{}
	if v6 {
		sa6 := &unix.SockaddrInet6{}
		if s.Source.IsValid() {
			sa6.Addr = s.Source.As16()
		}
		sa = sa6
	} else if s.Source.IsValid() {
		sa = &unix.SockaddrInet4{Addr: s.Source.As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("bind %s socket to %s: %w", what, s.Source, err)
	}
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("wrap %s socket: %w", what, err)
	}
	return c, nil
}

// attachIDFilter6 is attachIDFilter for a raw ICMPv6 socket, where the
// program sees the ICMPv6 header at offset 0: echo replies with identifier
// id pass, everything else (neighbour discovery, other probers) is dropped.
func attachIDFilter6(fd int, id uint16) error {
	return attachFilter(fd, []bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 1}, // A = type
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmp6EchoReply, SkipFalse: 3},
		bpf.LoadAbsolute{Off: 4, Size: 2}, // A = identifier
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(id), SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
}

// attachIDFilter installs a classic BPF program that accepts only packets
// whose ICMP identifier is id. On a raw IPv4 socket the program sees the IP
// header first, so the ICMP header starts at 4*IHL.
func attachIDFilter(fd int, id uint16) error {
	return attachFilter(fd, []bpf.Instruction{
		bpf.LoadMemShift{Off: 0},          // X = 4 * (ip[0] & 0xf)
		bpf.LoadIndirect{Off: 4, Size: 2}, // A = icmp identifier
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(id), SkipFalse: 1},
		bpf.RetConstant{Val: 0xffff}, // accept (up to 64 KiB)
		bpf.RetConstant{Val: 0},      // drop
	})
}

// attachFilter assembles and attaches a classic BPF socket filter.
func attachFilter(fd int, ins []bpf.Instruction) error {
	prog, err := bpf.Assemble(ins)
	if err != nil {
		return fmt.Errorf("assemble ICMP id filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach ICMP id filter: %w", err)
	}
	return nil
}

func (p *icmpProber) probe(ctx context.Context, t *target, timeout time.Duration) (time.Duration, error) {
	msg := make([]byte, icmpHeaderLen+2*cookieLen)
	msg[0] = icmpEchoRequest
	if p.v6 {
		msg[0] = icmp6EchoRequest
	}
	binary.BigEndian.PutUint16(msg[4:], p.id)
	copy(msg[icmpHeaderLen:], p.cookie[:])

	e := &echo{dst: t.addr, reply: make(chan time.Time, 1)}
	p.mu.Lock()
	// 65536 sequence numbers per prober: with timeout <= interval at most
	// one round is outstanding, so a number is never reused while pending.
	p.seq++
	seq := p.seq
	p.pending[seq] = e
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.pending[seq] == e {
			delete(p.pending, seq)
		}
		p.mu.Unlock()
	}()

	binary.BigEndian.PutUint16(msg[6:], seq)
	if !p.v6 {
		// ICMPv6's checksum covers a pseudo-header only the kernel
		// knows (the source it picks): the kernel fills it in.
		binary.BigEndian.PutUint16(msg[icmpChecksumOff:], checksum(msg))
	}
	var dst net.Addr = &net.IPAddr{IP: t.addr.AsSlice()}
	if !p.raw {
		dst = &net.UDPAddr{IP: t.addr.AsSlice()}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	sent := time.Now()
	if _, err := p.conn.WriteTo(msg, dst); err != nil {
		return 0, fmt.Errorf("send echo request: %w", err)
	}
	select {
	case at := <-e.reply:
		return max(at.Sub(sent), time.Nanosecond), nil
	case <-timer.C:
		return 0, errTimeout(timeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-p.done:
		return 0, errors.New("ICMP socket closed")
	}
}

// read dispatches echo replies to waiting probes until the socket is
// closed.
func (p *icmpProber) read() {
	defer close(p.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (ENOMEM, ...): a missed reply is a lost probe,
			// which is what the caller will see anyway. Pause so that a
			// persistent error cannot spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b := buf[:n]
		reply := byte(icmpEchoReply)
		if p.v6 {
			reply = icmp6EchoReply
		}
		if len(b) < icmpHeaderLen+cookieLen || b[0] != reply || b[1] != 0 {
			continue
		}
		if p.raw && binary.BigEndian.Uint16(b[4:]) != p.id {
			continue
		}
		if string(b[icmpHeaderLen:icmpHeaderLen+cookieLen]) != string(p.cookie[:]) {
			continue // someone else's echo with our identifier
		}
		var src netip.Addr
		switch a := from.(type) {
		case *net.IPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		case *net.UDPAddr:
			src, _ = netip.AddrFromSlice(a.IP)
		}
		seq := binary.BigEndian.Uint16(b[6:])
		p.mu.Lock()
		if e := p.pending[seq]; e != nil && e.dst == src.Unmap() {
			delete(p.pending, seq)
			e.reply <- now
		}
		p.mu.Unlock()
	}
}

func (p *icmpProber) close() error {
	err := p.conn.Close()
	<-p.done
	if err != nil {
		return fmt.Errorf("close ICMP socket: %w", err)
	}
	return nil
}

// checksum is the Internet checksum (RFC 1071) of b, whose checksum field is
// zero.
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
