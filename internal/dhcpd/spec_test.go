package dhcpd

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSpecChecks(t *testing.T) {
	base := testSpec("10.0.0.100", "10.0.0.102")
	tests := []struct {
		name   string
		modify func(s *Spec)
		ok     bool
	}{
		{"valid", func(*Spec) {}, true},
		{"no interface", func(s *Spec) { s.Interface = "" }, false},
		{"unknown mode", func(s *Spec) { s.Mode = "off" }, false},
		{"range reversed", func(s *Spec) { s.Range[0], s.Range[1] = s.Range[1], s.Range[0] }, false},
		{"range outside network", func(s *Spec) { s.Range[1] = addr("10.0.1.5") }, false},
		{"host outside network", func(s *Spec) { s.Hosts[0].IP = addr("192.168.0.2") }, false},
		{"server outside network", func(s *Spec) { s.ServerIP = addr("10.9.0.1") }, false},
		{"host on the server's address", func(s *Spec) { s.Hosts[0].IP = serverIP }, false},
		{"host on the broadcast address", func(s *Spec) { s.Hosts[0].IP = addr("10.0.0.255") }, false},
		{"server from the interface", func(s *Spec) { s.ServerIP, s.Network = netip.Addr{}, netip.Prefix{} }, true},
		{"service without action", func(s *Spec) { s.Mode = ModeService }, false},
		{"service with both", func(s *Spec) {
			s.Mode, s.Service = ModeService, Service{Unit: "u", Command: []string{"c"}}
		}, false},
		{"service with unit", func(s *Spec) { s.Mode, s.Service = ModeService, Service{Unit: "u"} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Hosts = append([]Host(nil), base.Hosts...)
			tt.modify(&s)
			_, err := New(s, nil)
			if (err == nil) != tt.ok {
				t.Errorf("New: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestStatusText(t *testing.T) {
	st := Status{
		Mode: ModeEmbedded, Interface: "lan0", Listening: true, Binds: 2,
		InUse: 1, Free: 19, StaticHosts: 1, Dropped: 3,
		Leases: []Lease{{IP: addr("10.0.0.20"), MAC: fixedMAC.String(), Hostname: "node-2", State: StateBound, Expires: t0, Static: true}},
	}
	want := `dhcp: embedded on lan0, listening (bound 2 times)
  leases: 1 in use, 19 free, 0 resting after a conflict; 1 fixed host
  dropped packets: 3
  10.0.0.20        dc:a6:32:90:31:cc  node-2           bound until 2026-01-01T12:00:00Z (fixed)
`
	if got := st.Text(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	svc := Status{Mode: ModeService, Interface: "lan0", Restarts: 2, LastRestart: t0.Add(time.Minute), LastError: "boom"}
	if got := svc.Text(); !strings.Contains(got, "2 restarts, last 2026-01-01T12:01:00Z") || !strings.Contains(got, "last error: boom") {
		t.Errorf("service status: %s", got)
	}
}
