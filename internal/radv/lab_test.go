package radv

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.GuardMain(m)) }

// TestSLAACLab: the sender in a lab's router namespace, on lan0; the LAN
// namespace's kernel (accept_ra 2, autoconf) is the host. It takes an
// address from the announced prefix, sees it deprecated once the prefix is
// announced with preferred lifetime 0, preferred again after, and drops the
// default router when the sender stops (router lifetime 0).
func TestSLAACLab(t *testing.T) {
	if testing.Short() {
		t.Skip("lab test")
	}
	l := lab.NewT(t, lab.Spec{IPv6: true})
	for k, v := range map[string]string{
		"net.ipv6.conf." + lab.ClientIface + ".accept_ra": "2",
		"net.ipv6.conf." + lab.ClientIface + ".autoconf":  "1",
	} {
		if err := l.Sysctl(l.LAN, k, v); err != nil {
			t.Fatal(err)
		}
	}
	h, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	s := New(Spec{Interface: lab.LANIface, MinInterval: 200 * time.Second, MaxInterval: 600 * time.Second, NetNS: int(h)},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	p := netip.MustParsePrefix("2001:db8:77::/64")
	adv := func(preferred time.Duration) Advert {
		return Advert{RouterLifetime: 30 * time.Minute, Prefixes: []Prefix{{Prefix: p, Uplink: "a", Preferred: preferred, Valid: 2 * time.Hour}}}
	}
	s.Set(adv(time.Hour), true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// waitAddr waits until the host's SLAAC address in p shows (or not)
	// "deprecated" in `ip -6 addr`. RAs are sent in bursts of 3, one a
	// second; the host also solicits when its link comes up.
	waitAddr := func(deprecated bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		var last string
		for time.Now().Before(deadline) {
			out, err := l.Exec(l.LAN, "ip", "-6", "addr", "show", "dev", lab.ClientIface, "scope", "global")
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			last = out
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "inet6 2001:db8:77:") && strings.Contains(line, "deprecated") == deprecated {
					return
				}
			}
			waitTick(ctx)
		}
		t.Fatalf("no address in %s with deprecated=%v; ip -6 addr:\n%s\nsender: %+v", p, deprecated, last, s.Status())
	}
	waitAddr(false)
	s.Set(adv(0), true)
	waitAddr(true)
	s.Set(adv(time.Hour), true)
	waitAddr(false)

	// The host's default router is the sender until the final RA.
	routeVia := func() string {
		out, _ := l.Exec(l.LAN, "ip", "-6", "route", "show", "default", "proto", "ra")
		return out
	}
	if !strings.Contains(routeVia(), "fe80::") {
		t.Fatalf("no RA default route on the host: %q", routeVia())
	}
	cancel()
	<-done
	done <- nil
	deadline := time.Now().Add(30 * time.Second)
	for strings.Contains(routeVia(), "fe80::") {
		if time.Now().After(deadline) {
			t.Fatalf("host kept the default router after the final RA: %q", routeVia())
		}
		waitTick(context.Background())
	}
	if st := s.Status(); st.Sent < 4 {
		t.Errorf("sent %d advertisements", st.Sent)
	}
}

// waitTick is the polling step of the lab waits (on kernel state that has
// no event to wait on).
func waitTick(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(50 * time.Millisecond):
	}
}
