// Package watcher observes the kernel's networking state through rtnetlink
// change notifications and turns them into typed trigger events.
//
// The model follows tailscale's netmon: one rtnetlink socket subscribed to the
// link, IPv4 address, IPv4 route and IPv4 rule multicast groups. Every
// notification becomes an [Event] that tells the consumer "something of this
// kind changed"; the consumer re-reads what it needs and reconciles. The
// watcher never polls and never writes kernel state.
//
// Notifications can be lost: when the socket's receive buffer overflows the
// kernel drops them and reports ENOBUFS. The watcher then emits an event of
// kind [KindResync], which tells the consumer to re-read everything. The same
// event is sent right after every (re)subscription, so the consumer's initial
// full read happens on the first event it receives and no change between that
// read and the subscription can be missed.
//
// A Sink (Options.Sink) receives every notification itself, before the
// events of its batch are sent: internal/kernel's mirror is kept that way,
// so the consumer reads a cache that already holds what an event announces.
//
// Events are triggers, not a change log. In particular the kernel does not
// send RTM_DELROUTE for IPv4 routes it flushes when their device goes down,
// loses its address or is deleted: a link or address event must make the
// consumer re-read routes and rules, not only a route event.
//
// Rules are observed here (rather than with vishvananda/netlink's
// subscriptions, which have none for rules) so that all four kinds share one
// socket and therefore one ordering and one overflow signal.
package watcher

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/backoff"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/internal/nlrecv"
	"github.com/uplinkd/uplinkd/internal/rtattr"
)

// Kind says what kind of kernel object an Event is about.
type Kind int

// The kinds of Event.
const (
	KindLink   Kind = iota // RTM_NEWLINK / RTM_DELLINK
	KindAddr               // RTM_NEWADDR / RTM_DELADDR (IPv4)
	KindRoute              // RTM_NEWROUTE / RTM_DELROUTE (IPv4)
	KindRule               // RTM_NEWRULE / RTM_DELRULE (IPv4)
	KindResync             // notifications may have been lost: re-read everything
)

// String returns "link", "addr", "route", "rule" or "resync".
func (k Kind) String() string {
	switch k {
	case KindLink:
		return "link"
	case KindAddr:
		return "addr"
	case KindRoute:
		return "route"
	case KindRule:
		return "rule"
	case KindResync:
		return "resync"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Event is one change notification. It is a trigger: it carries only what is
// needed to log it and to decide whether it is relevant, not the full object.
type Event struct {
	Kind     Kind
	Deleted  bool   // RTM_DEL*
	Index    int    // ifindex (link, addr, route's output dev if single path)
	Iface    string // link name (link events only; "" otherwise)
	Table    int    // route/rule table (RTA_TABLE/FRA_TABLE when present, else header)
	Protocol int    // route/rule protocol byte
	// IPv6: an address, route or rule notification of the IPv6 family.
	IPv6 bool
	// Effect: what the notification did to the Sink's cache (Sink.Update);
	// Changed when there is no Sink.
	Effect Effect
	At     time.Time // when the message was read from the socket
}

// Effect is what a notification did to a Sink's cache.
type Effect uint8

const (
	// Changed: the cache changed, or the Sink cannot tell.
	Changed Effect = iota
	// Echo: the notification of a write the Sink's owner made and
	// expected; the cache held its result already.
	Echo
	// Unchanged: the notification changed nothing the cache keeps (a route
	// of a table it does not keep, a link message that repeats what it
	// holds, the delete of something it does not have).
	Unchanged
)

func (e Effect) String() string {
	switch e {
	case Echo:
		return "echo"
	case Unchanged:
		return "unchanged"
	}
	return "changed"
}

// Options configure Run.
type Options struct {
	NetNS      int          // netns fd to subscribe in; <= 0 = the caller's (netnsx)
	Logger     *slog.Logger // nil = slog.Default()
	ReadBuffer int          // SO_RCVBUF bytes; 0 = 4 MiB (SO_RCVBUFFORCE is tried first, so root may exceed rmem_max)
	// Sink, if set, is fed every notification before the events of its
	// batch are sent, and told to resync before every KindResync event: a
	// cache of kernel state (the mirror in internal/kernel) is then current
	// when the consumer acts on an event.
	Sink Sink
}

// Sink consumes the raw notifications, on the watcher's goroutine.
type Sink interface {
	// Update applies one rtnetlink notification and says what it did to
	// the cache (Event.Effect).
	Update(netlink.Message) Effect
	// Resync says notifications may have been missed (a new subscription,
	// an overflow): the cache must be re-read from the kernel.
	Resync()
}

const (
	// Groups is the multicast group bitmask Run subscribes to. IPv4
	// netconf (a sysctl such as rp_filter written) produces no event; it
	// only keeps a Sink's copy of those values current. The IPv6 groups
	// are always joined, also when no uplink has ipv6 on: a reload can then
	// turn IPv6 on without a resubscription (which would be a gap in the
	// link history). The Sink says Unchanged of the IPv6 it does not keep
	// (the kernel mirror keeps only uplinkd's own while IPv6 is off); a
	// consumer without a Sink can drop them by Event.IPv6.
	Groups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV4_RULE |
		1<<(unix.RTNLGRP_IPV4_NETCONF-1) |
		unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV6_ROUTE | 1<<(unix.RTNLGRP_IPV6_RULE-1)

	defaultReadBuffer = 4 << 20
	minBackoff        = 10 * time.Millisecond
	maxBackoff        = time.Second
)

// Run subscribes and sends events to out until ctx is done. It never polls
// kernel state.
//
// The first event is always KindResync, sent once the subscription is in
// place: the consumer does its initial full read on it. When the kernel
// reports ENOBUFS (notifications were dropped because the receive buffer was
// full), Run closes the socket and subscribes again at once (the old queue
// holds only notifications older than the resync, and the kernel would drop
// later ones silently until it drained), then sends KindResync. Any other receive error
// means the socket is unusable: Run logs it, closes the socket, re-dials with
// backoff (10ms doubling to 1s) until it succeeds, and then sends KindResync.
//
// Sends to out block (the consumer is expected to coalesce), but Run returns
// promptly when ctx is done, also while blocked in a send or a receive.
//
// Run returns nil when ctx is done. It returns an error only if out is nil or
// the very first subscription fails (bad NetNS fd, missing privileges...);
// later failures are retried forever.
func Run(ctx context.Context, opts Options, out chan<- Event) error {
	if out == nil {
		return errors.New("watcher: nil event channel")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return run(ctx, opts, out, log, dialNetlink)
}

// conn is what Run reads from: a receiver on the real socket; tests
// substitute it. The messages of one Receive are valid until the next.
type conn interface {
	Receive() ([]netlink.Message, error)
	SetReadDeadline(time.Time) error
	Close() error
}

type dialFunc func(opts Options, log *slog.Logger) (conn, error)

// ReceiveBuffer is the buffer a netlink socket of uplinkd's receives into:
// an nlrecv.Receiver's, or one from mdlayher/netlink's pool
// (Config.MessageBufferSize), without which it peeks at every datagram for
// its size first (a second recvmsg) and allocates a buffer for it. 32 KiB
// holds any datagram the kernel sends: a dump's are at most 32 KiB less the
// skb overhead, a notification's one object.
const ReceiveBuffer = 32 << 10

func dialNetlink(opts Options, log *slog.Logger) (conn, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: Groups, NetNS: netnsx.FD(opts.NetNS)})
	if err != nil {
		return nil, err
	}
	r, err := nlrecv.New(c, ReceiveBuffer)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	size := opts.ReadBuffer
	if size <= 0 {
		size = defaultReadBuffer
	}
	// netlink.Conn.SetReadBuffer tries SO_RCVBUFFORCE (root may exceed
	// net.core.rmem_max) and falls back to SO_RCVBUF. A failure here is not
	// fatal: we still get notifications, and overflow is still reported.
	if err := c.SetReadBuffer(size); err != nil {
		log.Warn("watcher: cannot set netlink receive buffer", "bytes", size, "reason", err.Error())
	} else if log.Enabled(context.Background(), slog.LevelDebug) {
		got, _ := c.ReadBuffer()
		log.Debug("watcher: netlink receive buffer", "requested", size, "effective", got)
	}
	// NETLINK_NO_ENOBUFS is deliberately left off: overflow must be reported.
	return r, nil
}

// errOverflow: the kernel dropped notifications (ENOBUFS).
var errOverflow = errors.New("netlink receive buffer overflowed")

func run(ctx context.Context, opts Options, out chan<- Event, log *slog.Logger, dial dialFunc) error {
	c, err := dial(opts, log)
	if err != nil {
		return fmt.Errorf("watcher: subscribe to rtnetlink: %w", err)
	}
	log.Debug("watcher: subscribed", "netns_fd", opts.NetNS)

	retry := backoff.New(minBackoff, maxBackoff)
	for {
		received, err := serve(ctx, c, out, log, opts.Sink)
		_ = c.Close()
		if ctx.Err() != nil {
			return nil
		}
		if received {
			// The socket worked for a while: start the backoff over.
			retry.Reset()
		}
		overflow := errors.Is(err, errOverflow)
		if overflow {
			log.Warn("watcher: netlink receive buffer overflowed, notifications lost; resubscribing and resyncing")
		} else {
			log.Warn("watcher: netlink socket failed, resubscribing", "reason", err.Error(), "backoff", retry.Peek())
		}
		for {
			// An overflow's socket was fine: the first redial is at once.
			d := retry.Next()
			if !overflow && !sleep(ctx, d) {
				return nil
			}
			overflow = false
			c, err = dial(opts, log)
			if err == nil {
				break
			}
			log.Warn("watcher: resubscribe failed", "reason", err.Error(), "retry_in", retry.Peek())
		}
		log.Info("watcher: resubscribed to rtnetlink")
	}
}

// serve sends the KindResync that follows a subscription and then forwards
// notifications from c until ctx is done (it returns a nil error) or c fails.
// received reports whether any message was read.
func serve(ctx context.Context, c conn, out chan<- Event, log *slog.Logger, sink Sink) (received bool, err error) {
	// Unblock a pending Receive when ctx is done. A read deadline rather than
	// Close keeps the socket's lifetime with this goroutine.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	if sink != nil {
		sink.Resync()
	}
	if !send(ctx, out, Event{Kind: KindResync, At: time.Now()}) {
		return false, nil
	}
	debug := log.Enabled(ctx, slog.LevelDebug)
	var effects [8]Effect
	for {
		msgs, err := c.Receive()
		now := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return received, nil
			}
			if errors.Is(err, unix.ENOBUFS) {
				// The kernel reports an overflow once, then drops
				// notifications silently until the queue is empty again,
				// and what is still queued is older than any dump made
				// now. A new socket starts clean: run resubscribes at once
				// and serve asks for the resync once it is in place.
				if sink != nil {
					sink.Resync()
				}
				return received, errOverflow
			}
			return received, err
		}
		received = true
		// The sink sees the whole batch before its events go out, and
		// says what each message did to its cache. A notification is
		// usually alone in its datagram, so the answers fit in effects
		// without an allocation.
		effect := effects[:0]
		if sink != nil {
			for _, m := range msgs {
				effect = append(effect, sink.Update(m))
			}
		}
		for i, m := range msgs {
			ev, ok, derr := decode(m.Header.Type, m.Data)
			if !ok {
				continue
			}
			ev.At = now
			if i < len(effect) {
				ev.Effect = effect[i]
			}
			if debug {
				log.Debug("watcher: event", "kind", ev.Kind.String(), "deleted", ev.Deleted,
					"index", ev.Index, "iface", ev.Iface, "table", ev.Table, "protocol", ev.Protocol, "effect", ev.Effect.String())
			}
			if derr != nil {
				// Still a valid trigger; only the details are missing.
				log.Debug("watcher: cannot decode notification", "kind", ev.Kind.String(), "reason", derr.Error())
			}
			if !send(ctx, out, ev) {
				return received, nil
			}
		}
	}
}

func send(ctx context.Context, out chan<- Event, ev Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Field offsets in the fixed headers of the rtnetlink messages we decode
// (the header sizes are unix.Sizeof* and rtattr.SizeofFibRuleHdr).
const (
	rtmsgTableOffset  = 4 // rtmsg.rtm_table, fib_rule_hdr.table
	rtmsgProtoOffset  = 5 // rtmsg.rtm_protocol
	ifinfoIndexOffset = 4 // ifinfomsg.ifi_index
	ifaddrIndexOffset = 4 // ifaddrmsg.ifa_index
)

// decode turns one rtnetlink message (type and payload after the nlmsghdr)
// into an Event without At. ok is false for message types that are not
// notifications of interest. A non-nil err with ok true means the payload was
// malformed: ev still has Kind and Deleted, which is enough for a trigger.
func decode(typ netlink.HeaderType, b []byte) (ev Event, ok bool, err error) {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		ev = Event{Kind: KindLink, Deleted: typ == unix.RTM_DELLINK}
		if len(b) < unix.SizeofIfInfomsg {
			return ev, true, rtattr.ErrShort
		}
		ev.Index = int(int32(binary.NativeEndian.Uint32(b[ifinfoIndexOffset:])))
		err = rtattr.Walk(b[unix.SizeofIfInfomsg:], func(ad *rtattr.Decoder) {
			if ad.Type() == unix.IFLA_IFNAME {
				ev.Iface = ad.String()
			}
		})
		return ev, true, err

	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		ev = Event{Kind: KindAddr, Deleted: typ == unix.RTM_DELADDR}
		if len(b) < unix.SizeofIfAddrmsg {
			return ev, true, rtattr.ErrShort
		}
		ev.IPv6 = b[0] == unix.AF_INET6
		ev.Index = int(binary.NativeEndian.Uint32(b[ifaddrIndexOffset:]))
		return ev, true, nil

	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		ev = Event{Kind: KindRoute, Deleted: typ == unix.RTM_DELROUTE}
		if len(b) < unix.SizeofRtMsg {
			return ev, true, rtattr.ErrShort
		}
		ev.IPv6 = b[0] == unix.AF_INET6
		ev.Table = int(b[rtmsgTableOffset])
		ev.Protocol = int(b[rtmsgProtoOffset])
		multipath := false
		err = rtattr.Walk(b[unix.SizeofRtMsg:], func(ad *rtattr.Decoder) {
			switch ad.Type() {
			case unix.RTA_TABLE:
				ev.Table = int(ad.Uint32())
			case unix.RTA_OIF:
				ev.Index = int(ad.Uint32())
			case unix.RTA_MULTIPATH:
				multipath = true
			}
		})
		if multipath {
			ev.Index = 0 // several output devices: none is "the" device
		}
		return ev, true, err

	case unix.RTM_NEWRULE, unix.RTM_DELRULE:
		ev = Event{Kind: KindRule, Deleted: typ == unix.RTM_DELRULE}
		if len(b) < rtattr.SizeofFibRuleHdr {
			return ev, true, rtattr.ErrShort
		}
		ev.IPv6 = b[0] == unix.AF_INET6
		ev.Table = int(b[rtmsgTableOffset])
		err = rtattr.Walk(b[rtattr.SizeofFibRuleHdr:], func(ad *rtattr.Decoder) {
			switch ad.Type() {
			case unix.FRA_TABLE:
				ev.Table = int(ad.Uint32())
			case unix.FRA_PROTOCOL:
				ev.Protocol = int(ad.Uint8())
			}
		})
		return ev, true, err
	}
	return Event{}, false, nil
}
