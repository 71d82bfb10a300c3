package watcher

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/nlrecv"
)

// TestReceiverOnARealSocket: the receiver reads real notifications (the
// kernel's own framing), reports an overflow as an error that wraps
// ENOBUFS, as mdlayher/netlink does (serve resubscribes on it), and a read
// deadline ends a waiting Receive (serve's way to stop).
func TestReceiverOnARealSocket(t *testing.T) {
	requireRoot(t)
	_, fd := newNS(t)
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_IPV4_ROUTE, NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	r, err := nlrecv.New(c, ReceiveBuffer)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h, err := vnl.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	add := func(i int) {
		t.Helper()
		route := vnl.Route{Dst: &net.IPNet{IP: net.IPv4(10, 9, byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)}, Table: 100, Type: unix.RTN_BLACKHOLE}
		if err := h.RouteAdd(&route); err != nil {
			t.Fatalf("route add %v: %v", route.Dst, err)
		}
	}

	for i := range 3 {
		add(i)
		msgs, err := r.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 1 || msgs[0].Header.Type != unix.RTM_NEWROUTE {
			t.Fatalf("route %d: %d messages, want one RTM_NEWROUTE", i, len(msgs))
		}
		ev, ok, err := decode(msgs[0].Header.Type, msgs[0].Data)
		if !ok || err != nil || ev.Kind != KindRoute || ev.Table != 100 {
			t.Fatalf("route %d: decoded %+v (ok %v, err %v)", i, ev, ok, err)
		}
	}

	// Overflow: far more notifications than a small buffer holds.
	if err := c.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		add(100 + i)
	}
	readUntil(t, r, unix.ENOBUFS, "after an overflow")

	// Drain what is left, then a deadline ends the wait for more.
	if err := r.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	readUntil(t, r, os.ErrDeadlineExceeded, "waiting past the deadline")
}

// readUntil reads until Receive fails with want; any other error fails
// the test.
func readUntil(t *testing.T, r *nlrecv.Receiver, want error, step string) {
	t.Helper()
	for {
		_, err := r.Receive()
		if errors.Is(err, want) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v, want %v", step, err, want)
		}
	}
}
