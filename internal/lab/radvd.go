package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Router advertisements in an IPv6 lab: Debian's radvd runs in the ISP
// namespace of an ethernet uplink and announces prefixes on the customer
// link (cust0), the way an ISP's router does. The router namespace's
// uplink then takes a SLAAC address from each prefix and the kernel's own
// `proto ra` default route via the ISP's link-local address: the state
// uplinkd reads in the field, not one stood in by hand.
//
// Only ethernet-like uplinks: a ppp-like veth of the lab has ARP off, and
// an ISP on a real PPP link hands out IPv6 by IPv6CP and DHCPv6 rather than
// by RA on a broadcast link.

// RAPrefix is one prefix radvd announces. Deprecated announces it with a
// preferred lifetime of 0 (what an ISP sends for the old prefix after a
// renumbering): the kernel keeps the SLAAC address but marks it deprecated.
type RAPrefix struct {
	Prefix     netip.Prefix
	Deprecated bool
}

// RADVDPath finds radvd (in /usr/sbin, which a non-root PATH may lack), or
// says why not: scripts/deps.sh installs it for the tests.
func RADVDPath() (string, error) {
	if p, err := exec.LookPath("radvd"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/radvd"); err == nil {
		return "/usr/sbin/radvd", nil
	}
	return "", errors.New("radvd not installed (scripts/deps.sh installs it)")
}

// radvdConf is radvd's configuration for the customer link: advertisements
// every 3-4 s (fast enough for a test, no waiting on the RFC's 200-600 s),
// a default-router lifetime of 600 s, each prefix on-link and autonomous.
func radvdConf(prefixes []RAPrefix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "interface %s {\n\tAdvSendAdvert on;\n\tMinRtrAdvInterval 3;\n\tMaxRtrAdvInterval 4;\n\tAdvDefaultLifetime 600;\n", CustIface)
	for _, p := range prefixes {
		preferred := "1800"
		if p.Deprecated {
			preferred = "0"
		}
		fmt.Fprintf(&b, "\tprefix %s {\n\t\tAdvOnLink on;\n\t\tAdvAutonomous on;\n\t\tAdvValidLifetime 3600;\n\t\tAdvPreferredLifetime %s;\n\t};\n", p.Prefix.Masked(), preferred)
	}
	b.WriteString("};\n")
	return b.String()
}

// StartRA runs radvd in the ISP namespace of the ethernet uplink name,
// announcing prefixes on the customer link. Before it starts, the ISP takes
// ::1 of each /64 on the link and the inet namespace routes the prefixes to
// the ISP (so SLAAC addresses are reachable from the inet host), and the
// router's uplink accepts RAs although it forwards (accept_ra 2). dir holds
// radvd's configuration and pid file (a test's TempDir). Stop it with
// StopRA; the lab's Close stops it too.
func (l *Lab) StartRA(name, dir string, prefixes ...RAPrefix) (*exec.Cmd, error) {
	bin, err := RADVDPath()
	if err != nil {
		return nil, err
	}
	if err := l.prepareRA(name, prefixes); err != nil {
		return nil, fmt.Errorf("lab: RA on %s: %w", name, err)
	}
	conf := filepath.Join(dir, "radvd-"+name+".conf")
	// radvd refuses a configuration file others can write.
	if err := os.WriteFile(conf, []byte(radvdConf(prefixes)), 0o644); err != nil {
		return nil, fmt.Errorf("lab: RA on %s: %w", name, err)
	}
	return l.Start(l.ISP(name), bin, "--nodaemon", "--logmethod", "stderr", "--config", conf,
		"--pidfile", filepath.Join(dir, "radvd-"+name+".pid"))
}

// prepareRA is StartRA's addressing and sysctls.
func (l *Lab) prepareRA(name string, prefixes []RAPrefix) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return err
	}
	if !l.spec.IPv6 || u.spec.Kind != KindEthernet || !u.present {
		return errors.New("needs an IPv6 lab and a present ethernet uplink")
	}
	if err := sysctlIn(l.router.name, map[string]string{"net.ipv6.conf." + u.spec.Name + ".accept_ra": "2"}); err != nil {
		return err
	}
	cust, err := u.isp.h.LinkByName(CustIface)
	if err != nil {
		return err
	}
	ispWAN := netip.MustParseAddr(fmt.Sprintf("fd00:18:%x::1", u.idx))
	for _, p := range prefixes {
		if p.Prefix.Bits() != 64 || !p.Prefix.Addr().Is6() {
			return fmt.Errorf("prefix %s: SLAAC needs an IPv6 /64", p.Prefix)
		}
		isp := netip.PrefixFrom(p.Prefix.Masked().Addr().Next(), 64)
		if err := u.isp.h.AddrReplace(cust, &netlink.Addr{IPNet: ipnet(isp), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("add %s to %s: %w", isp, CustIface, err)
		}
		if err := l.inet.h.RouteReplace(&netlink.Route{Dst: ipnet(p.Prefix.Masked()), Gw: ispWAN.AsSlice()}); err != nil {
			return fmt.Errorf("inet route %s: %w", p.Prefix, err)
		}
	}
	return nil
}

// StopRA stops a radvd started by StartRA and waits for it. radvd sends a
// last advertisement with a router lifetime of 0 as it goes, as a router
// being shut down does.
func (l *Lab) StopRA(cmd *exec.Cmd) error {
	if l.Exited(cmd) {
		return fmt.Errorf("lab: radvd had already exited: %w", l.Wait(cmd))
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("lab: stop radvd: %w", err)
	}
	// The exit status of a process stopped by its signal is not an error here.
	_ = l.Wait(cmd)
	return nil
}
