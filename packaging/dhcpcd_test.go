package packaging_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// dhcpcdHook is the dhcpcd hook the package installs into
// /usr/lib/dhcpcd/dhcpcd-hooks (contract: docs/ipv6.md).
const dhcpcdHook = "../contrib/dhcpcd/70-uplinkd"

// runDhcpcdHook sources the hook as dhcpcd-run-hooks does (`. "$hook"`
// in sh, with dhcpcd's variables set), then proves the runner's state
// survived: a marker after the source runs, and no variable but the
// function leaked.
func runDhcpcdHook(t *testing.T, pathDir string, env []string) {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "run-hooks")
	hook, err := filepath.Abs(dhcpcdHook)
	if err != nil {
		t.Fatal(err)
	}
	names := "set | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p' | grep -v '^_$' | sort"
	script := "#!/bin/sh\nset -- keep\n" + names + " > '" + wrapper + ".before'\n. '" + hook + "'\n" +
		"[ \"$1\" = keep ] || { echo 'positional parameters changed' >&2; exit 1; }\n" +
		names + " > '" + wrapper + ".after'\n" +
		"cmp -s '" + wrapper + ".before' '" + wrapper + ".after' || { echo variables leaked; diff '" + wrapper + ".before' '" + wrapper + ".after'; exit 1; }\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	runScript(t, wrapper, pathDir, env, nil)
}

// TestDhcpcdHook: dhcpcd's reasons and variables become the event of the
// contract: the first delegated prefix with its lifetimes while bound,
// none when the delegation ended, nothing for other reasons.
func TestDhcpcdHook(t *testing.T) {
	pd := []string{"interface=ppp0", "new_delegated_dhcp6_prefix=2001:db8:a::/56 2001:db8:f::/60",
		"new_dhcp6_ia_pd1_prefix1=2001:db8:a::", "new_dhcp6_ia_pd1_prefix1_length=56",
		"new_dhcp6_ia_pd1_prefix1_pltime=1800", "new_dhcp6_ia_pd1_prefix1_vltime=3600"}
	full := []string{"event", "--iface=ppp0", "--delegated=2001:db8:a::/56", "--preferred-lifetime=1800", "--valid-lifetime=3600"}
	for _, tc := range []struct {
		name string
		env  []string
		want []string // nil: uplinkd must not be called
	}{
		{"BOUND6", append([]string{"reason=BOUND6"}, pd...), full},
		{"RENEW6", append([]string{"reason=RENEW6"}, pd...), full},
		{"REBIND6", append([]string{"reason=REBIND6"}, pd...), full},
		{"REBOOT6", append([]string{"reason=REBOOT6"}, pd...), full},
		{"INFORM6", append([]string{"reason=INFORM6"}, pd...), full},
		{"lifetimes of another prefix are not passed", []string{"reason=BOUND6", "interface=eth1",
			"new_delegated_dhcp6_prefix=2001:db8:b::/56", "new_dhcp6_ia_pd1_prefix1=2001:db8:c::",
			"new_dhcp6_ia_pd1_prefix1_length=56", "new_dhcp6_ia_pd1_prefix1_vltime=60"},
			[]string{"event", "--iface=eth1", "--delegated=2001:db8:b::/56"}},
		{"a lifetime that is no number is not passed", []string{"reason=BOUND6", "interface=ppp0",
			"new_delegated_dhcp6_prefix=2001:db8:a::/56", "new_dhcp6_ia_pd1_prefix1=2001:db8:a::",
			"new_dhcp6_ia_pd1_prefix1_length=56", "new_dhcp6_ia_pd1_prefix1_vltime=1;x"},
			[]string{"event", "--iface=ppp0", "--delegated=2001:db8:a::/56"}},
		{"EXPIRE6", []string{"reason=EXPIRE6", "interface=ppp0"}, []string{"event", "--iface=ppp0", "--delegated=none"}},
		{"RELEASE6", []string{"reason=RELEASE6", "interface=ppp0"}, []string{"event", "--iface=ppp0", "--delegated=none"}},
		{"STOP6", []string{"reason=STOP6", "interface=ppp0"}, []string{"event", "--iface=ppp0", "--delegated=none"}},
		// What Debian 12's dhcpcd 9.4.1 gives the hook on the uplink's
		// lease (the VM suite's exit hook records it): the IA_PD prefix
		// variables, no new_delegated_dhcp6_prefix.
		{"dhcpcd 9.4.1: IA_PD prefix only", append([]string{"reason=REBOOT6"}, pd[0], pd[2], pd[3], pd[4], pd[5]), full},
		{"bound without a delegation", []string{"reason=BOUND6", "interface=ppp0"}, nil},
		{"IPv4 lease", []string{"reason=BOUND", "interface=ppp0", "new_ip_address=192.0.2.2"}, nil},
		{"router advertisement", []string{"reason=ROUTERADVERT", "interface=ppp0"}, nil},
		{"no interface", []string{"reason=BOUND6", "new_delegated_dhcp6_prefix=2001:db8:a::/56"}, nil},
		{"a glob in the list is not expanded", []string{"reason=BOUND6", "interface=ppp0", "new_delegated_dhcp6_prefix=*"},
			[]string{"event", "--iface=ppp0", "--delegated=*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, calls := fakeUplinkd(t, fakeOK)
			runDhcpcdHook(t, dir, tc.env)
			if got := calls(); !slices.Equal(got, tc.want) {
				t.Errorf("uplinkd argv = %q, want %q", got, tc.want)
			}
		})
	}
	// Whatever uplinkd does, the hook runner goes on.
	for _, fake := range []string{fakeFail, fakeHang, fakeStubborn} {
		dir, calls := fakeUplinkd(t, fake)
		runDhcpcdHook(t, dir, append([]string{"reason=BOUND6"}, pd...))
		if calls() == nil {
			t.Error("uplinkd was not called")
		}
	}
	// Not installed: nothing happens, the runner goes on.
	runDhcpcdHook(t, t.TempDir(), append([]string{"reason=BOUND6"}, pd...))
}
