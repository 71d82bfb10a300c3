package radv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv6"
)

// Timings of RFC 4861 6.2 and of the bursts on a change.
const (
	// MinDelayBetweenRAs is MIN_DELAY_BETWEEN_RAS: solicited answers
	// (sent to all nodes) are at least this far apart.
	MinDelayBetweenRAs = 3 * time.Second
	// Burst is how many advertisements a change (and the start) sends:
	// MAX_INITIAL_RTR_ADVERTISEMENTS, and the repetition RFC 9096 3.5 asks
	// for so that one lost packet does not keep a dead prefix preferred.
	Burst = 3
	// BurstInterval separates the advertisements of a burst (RFC 4861
	// caps the initial ones at 16 s apart; a withdrawal must be quick).
	BurstInterval = time.Second
	// retryOpen is how soon a socket that could not open (no link-local
	// address yet, interface missing) is tried again.
	retryOpen = 2 * time.Second
)

// Spec is what a Sender needs besides the advertisement.
type Spec struct {
	// Interface is the LAN interface: the socket is bound to its
	// link-local address, so the advertisements leave from it.
	Interface string
	// MinInterval and MaxInterval bound the periodic unsolicited
	// advertisements (RFC 4861 MinRtrAdvInterval, MaxRtrAdvInterval).
	MinInterval, MaxInterval time.Duration
	// NetNS is the namespace fd the socket opens in (<= 0: the caller's).
	NetNS int
}

// Status is what the sender last did, for the status and metrics.
type Status struct {
	Advert   Advert
	Active   bool
	LastSent time.Time
	Sent     uint64
	// Solicited counts the router solicitations answered.
	Solicited uint64
	// Error is why no advertisement can leave ("" when the socket is open).
	Error string
}

// Sender sends the advertisements of the last Set on one interface. Run
// does the sending; Set and Status are safe from any goroutine.
type Sender struct {
	spec Spec
	log  *slog.Logger

	mu     sync.Mutex
	adv    Advert
	active bool
	st     Status

	wake chan struct{}
	rs   chan struct{}
}

// New is a Sender of spec that announces nothing until Set.
func New(spec Spec, log *slog.Logger) *Sender {
	return &Sender{spec: spec, log: log, wake: make(chan struct{}, 1), rs: make(chan struct{}, 1)}
}

// Set is what to announce. active false (an HA backup) sends nothing, after
// one final advertisement with router lifetime 0 if it was announcing. A
// change of shape (Advert.SameShape) leaves at once, as a burst; other
// changes (lifetimes counting down) leave with the next periodic one.
func (s *Sender) Set(a Advert, active bool) {
	s.mu.Lock()
	changed := !a.SameShape(s.adv) || active != s.active
	s.adv, s.active = a, active
	s.mu.Unlock()
	if changed {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Status is a copy of the sender's state.
func (s *Sender) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Advert, st.Active = s.adv, s.active
	return st
}

func (s *Sender) current() (Advert, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adv, s.active
}

func (s *Sender) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.st.Error && msg != "" {
		s.log.Warn("router advertisements cannot be sent; retrying", "event", "radv", "iface", s.spec.Interface, "reason", msg)
	}
	s.st.Error = msg
}

// Run sends until ctx ends, then sends the final advertisement (router
// lifetime 0) if it was announcing. A socket that fails is opened again.
func (s *Sender) Run(ctx context.Context) error {
	for {
		c, mac, err := s.open()
		s.setErr(err)
		if err == nil {
			err = s.serve(ctx, c, mac)
			c.Close()
			if ctx.Err() != nil {
				return nil
			}
			s.setErr(err)
		}
		t := time.NewTimer(retryOpen)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// open is the raw ICMPv6 socket on the interface's link-local address, hop
// limit 255 (ndp.Listen), joined to all-routers for the solicitations.
func (s *Sender) open() (*ndp.Conn, net.HardwareAddr, error) {
	var c *ndp.Conn
	var mac net.HardwareAddr
	err := netnsx.Do(netns.NsHandle(nsOrOwn(s.spec.NetNS)), func() error {
		ifi, err := net.InterfaceByName(s.spec.Interface)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		if err != nil {
			return err
		}
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeRouterSolicitation)
		if err := c.SetICMPFilter(&f); err != nil {
			c.Close()
			return err
		}
		if err := c.JoinGroup(netip.MustParseAddr("ff02::2")); err != nil {
			c.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open ICMPv6 socket on %s: %w", s.spec.Interface, err)
	}
	return c, mac, nil
}

func nsOrOwn(fd int) int {
	if fd <= 0 {
		return int(netnsx.Own)
	}
	return fd
}

var allNodes = netip.MustParseAddr("ff02::1")

// serve sends on c until ctx ends or a write fails.
func (s *Sender) serve(ctx context.Context, c *ndp.Conn, mac net.HardwareAddr) error {
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			m, _, _, err := c.ReadFrom()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return // closed
			}
			if _, ok := m.(*ndp.RouterSolicitation); ok {
				select {
				case s.rs <- struct{}{}:
				default:
				}
			}
		}
	}()
	defer func() { c.Close(); <-readDone }()

	var last, due time.Time // last advertisement sent, next one due
	announcing := false
	burst := 0 // advertisements of the current burst still to send
	send := func(a Advert) error {
		if err := c.WriteTo(a.Message(mac), nil, allNodes); err != nil {
			return fmt.Errorf("send router advertisement on %s: %w", s.spec.Interface, err)
		}
		last = time.Now()
		s.mu.Lock()
		s.st.LastSent, s.st.Sent = last, s.st.Sent+1
		s.mu.Unlock()
		return nil
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	kick := true // (re)start: a burst if active
	for {
		if kick {
			kick = false
			a, active := s.current()
			switch {
			case active:
				announcing, burst, due = true, Burst, time.Now()
			case announcing:
				// Became backup (or stopped announcing): tell hosts once.
				announcing, burst = false, 0
				if err := send(a.Final()); err != nil {
					return err
				}
			}
		}
		if announcing && !time.Now().Before(due) {
			a, _ := s.current()
			if err := send(a); err != nil {
				return err
			}
			if burst > 0 {
				burst--
			}
			due = last.Add(s.periodic())
			if burst > 0 {
				due = last.Add(BurstInterval)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if announcing {
			timer.Reset(time.Until(due))
		}
		select {
		case <-ctx.Done():
			if announcing {
				a, _ := s.current()
				if err := send(a.Final()); err != nil {
					s.log.Warn("final router advertisement not sent", "event", "radv", "iface", s.spec.Interface, "reason", err.Error())
				}
			}
			return nil
		case <-readDone:
			return fmt.Errorf("read router solicitations on %s: socket closed", s.spec.Interface)
		case <-s.wake:
			kick = true
		case <-timer.C:
		case <-s.rs:
			if !announcing {
				continue
			}
			// RFC 4861 6.2.6: answer to all nodes, not more often than
			// MIN_DELAY_BETWEEN_RAS.
			if at := last.Add(MinDelayBetweenRAs); at.Before(due) {
				due = at
			}
			s.mu.Lock()
			s.st.Solicited++
			s.mu.Unlock()
		}
	}
}

// periodic is the next unsolicited interval: uniformly random in
// [MinInterval, MaxInterval] (RFC 4861 6.2.4).
func (s *Sender) periodic() time.Duration {
	lo, hi := s.spec.MinInterval, s.spec.MaxInterval
	if hi <= lo {
		return hi
	}
	return lo + rand.N(hi-lo)
}
