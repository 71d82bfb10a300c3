package dhcpd

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

var (
	t0       = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	testNet  = netip.MustParsePrefix("10.0.0.0/24")
	serverIP = netip.MustParseAddr("10.0.0.1")
	fixedMAC = net.HardwareAddr{0xdc, 0xa6, 0x32, 0x90, 0x31, 0xcc}
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func testSpec(first, last string) Spec {
	return Spec{
		Mode: ModeEmbedded, Interface: "lan0",
		ServerIP: serverIP, Network: testNet,
		Range: [2]netip.Addr{addr(first), addr(last)},
		Lease: time.Hour, MaxLease: 4 * time.Hour,
		Hosts: []Host{{Name: "node-2", MAC: fixedMAC, IP: addr("10.0.0.2")}},
	}
}

func testPool(t *testing.T, first, last string) *pool {
	t.Helper()
	s, err := testSpec(first, last).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return newPool(s)
}

func macN(i int) string { return fmt.Sprintf("02:00:00:00:00:%02x", i) }

// checkInvariants fails if two clients share an address or the indexes
// disagree.
func checkInvariants(t testing.TB, p *pool) {
	t.Helper()
	for c, r := range p.byClient {
		if r.Client != c {
			t.Fatalf("byClient[%s] holds a record of %s", c, r.Client)
		}
		if p.byIP[r.IP] != r {
			t.Fatalf("client %s's record for %s is not the address's record", c, r.IP)
		}
	}
	for ip, r := range p.byIP {
		if r.IP != ip {
			t.Fatalf("byIP[%s] holds %s", ip, r.IP)
		}
	}
}

func TestCandidateOrder(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(p *pool)
		client    string
		mac       string
		requested string
		want      string
		known     bool
		wantErr   error
	}{
		{name: "first free", client: "c1", mac: macN(1), want: "10.0.0.100"},
		{name: "fixed host", client: "x", mac: fixedMAC.String(), want: "10.0.0.2", known: true},
		{name: "fixed host ignores requested", client: "x", mac: fixedMAC.String(), requested: "10.0.0.101", want: "10.0.0.2", known: true},
		{name: "requested free address", client: "c1", mac: macN(1), requested: "10.0.0.102", want: "10.0.0.102"},
		{name: "requested outside pool", client: "c1", mac: macN(1), requested: "10.0.0.50", want: "10.0.0.100"},
		{
			name: "previous lease preferred over requested",
			setup: func(p *pool) {
				_, _, _ = p.ack("c1", macN(1), "", addr("10.0.0.101"), 0, t0.Add(-2*time.Hour))
			},
			client: "c1", mac: macN(1), requested: "10.0.0.102", want: "10.0.0.101", known: true,
		},
		{
			name: "released lease comes back to its client",
			setup: func(p *pool) {
				_, _, _ = p.ack("c1", macN(1), "", addr("10.0.0.102"), 0, t0)
				p.release("c1", addr("10.0.0.102"), t0)
			},
			client: "c1", mac: macN(1), want: "10.0.0.102", known: true,
		},
		{
			name: "bound address of another client skipped",
			setup: func(p *pool) {
				_, _, _ = p.ack("c2", macN(2), "", addr("10.0.0.100"), 0, t0)
			},
			client: "c1", mac: macN(1), requested: "10.0.0.100", want: "10.0.0.101",
		},
		{
			name: "bad address skipped",
			setup: func(p *pool) {
				p.markBad(addr("10.0.0.100"), t0)
			},
			client: "c1", mac: macN(1), want: "10.0.0.101",
		},
		{
			name: "never-used before expired, then oldest expired",
			setup: func(p *pool) {
				_, _, _ = p.ack("c2", macN(2), "", addr("10.0.0.100"), 0, t0.Add(-3*time.Hour))
				_, _, _ = p.ack("c3", macN(3), "", addr("10.0.0.101"), 0, t0.Add(-5*time.Hour))
				_, _, _ = p.ack("c4", macN(4), "", addr("10.0.0.102"), 0, t0)
			},
			client: "c1", mac: macN(1), want: "10.0.0.101",
		},
		{
			name: "exhausted",
			setup: func(p *pool) {
				for i, a := range []string{"10.0.0.100", "10.0.0.101", "10.0.0.102"} {
					_, _, _ = p.ack(fmt.Sprint("c", i+10), macN(i+10), "", addr(a), 0, t0)
				}
			},
			client: "c1", mac: macN(1), wantErr: errExhausted,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool(t, "10.0.0.100", "10.0.0.102")
			if tt.setup != nil {
				tt.setup(p)
			}
			var req netip.Addr
			if tt.requested != "" {
				req = addr(tt.requested)
			}
			ip, known, err := p.candidate(tt.client, tt.mac, req, t0)
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if ip != addr(tt.want) || known != tt.known {
				t.Errorf("candidate = %s known=%v, want %s known=%v", ip, known, tt.want, tt.known)
			}
			checkInvariants(t, p)
		})
	}
}

func TestPoolExcludes(t *testing.T) {
	// A range over the whole /24 never yields the network, broadcast,
	// server or fixed addresses.
	p := testPool(t, "10.0.0.0", "10.0.0.255")
	seen := map[netip.Addr]bool{}
	for i := range 300 {
		ip, _, err := p.candidate(fmt.Sprint("c", i), macN(i%256), netip.Addr{}, t0)
		if err == errExhausted {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.ack(fmt.Sprint("c", i), macN(i%256), "", ip, 0, t0); err != nil {
			t.Fatalf("ack %s: %v", ip, err)
		}
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
	for _, a := range []string{"10.0.0.0", "10.0.0.255", "10.0.0.1", "10.0.0.2"} {
		if seen[addr(a)] {
			t.Errorf("%s was handed out", a)
		}
	}
	if len(seen) != 252 {
		t.Errorf("handed out %d addresses, want 252", len(seen))
	}
	inUse, free, _ := p.counts(t0)
	if inUse != 252 || free != 0 {
		t.Errorf("counts in use %d free %d, want 252 and 0", inUse, free)
	}
	checkInvariants(t, p)
}

func TestAck(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(p *pool)
		client  string
		mac     string
		ip      string
		want    time.Duration
		wantErr error
	}{
		{name: "free pool address", client: "c1", mac: macN(1), ip: "10.0.0.100", want: time.Hour},
		{name: "outside pool", client: "c1", mac: macN(1), ip: "10.0.0.50", wantErr: errNotOurs},
		{name: "server address", client: "c1", mac: macN(1), ip: "10.0.0.1", wantErr: errNotOurs},
		{name: "fixed address of another host", client: "c1", mac: macN(1), ip: "10.0.0.2", wantErr: errNotOurs},
		{name: "fixed host gets its address", client: "x", mac: fixedMAC.String(), ip: "10.0.0.2", want: time.Hour},
		{name: "fixed host asks for a pool address", client: "x", mac: fixedMAC.String(), ip: "10.0.0.100", wantErr: errWrongStatic},
		{
			name:   "taken by another client",
			setup:  func(p *pool) { _, _, _ = p.ack("c2", macN(2), "", addr("10.0.0.100"), 0, t0) },
			client: "c1", mac: macN(1), ip: "10.0.0.100", wantErr: errTaken,
		},
		{
			name:   "offered to another client",
			setup:  func(p *pool) { p.offer("c2", macN(2), "", addr("10.0.0.100"), t0) },
			client: "c1", mac: macN(1), ip: "10.0.0.100", wantErr: errTaken,
		},
		{
			name:   "expired lease of another client",
			setup:  func(p *pool) { _, _, _ = p.ack("c2", macN(2), "", addr("10.0.0.100"), 0, t0.Add(-2*time.Hour)) },
			client: "c1", mac: macN(1), ip: "10.0.0.100", want: time.Hour,
		},
		{
			name:   "declined address",
			setup:  func(p *pool) { p.markBad(addr("10.0.0.100"), t0) },
			client: "c1", mac: macN(1), ip: "10.0.0.100", wantErr: errTaken,
		},
		{
			name:   "bad address rested long enough",
			setup:  func(p *pool) { p.markBad(addr("10.0.0.100"), t0.Add(-time.Hour)) },
			client: "c1", mac: macN(1), ip: "10.0.0.100", want: time.Hour,
		},
		{
			name:   "renewal of own lease",
			setup:  func(p *pool) { _, _, _ = p.ack("c1", macN(1), "", addr("10.0.0.100"), 0, t0.Add(-30*time.Minute)) },
			client: "c1", mac: macN(1), ip: "10.0.0.100", want: time.Hour,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool(t, "10.0.0.100", "10.0.0.102")
			if tt.setup != nil {
				tt.setup(p)
			}
			l, d, err := p.ack(tt.client, tt.mac, "", addr(tt.ip), 0, t0)
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			checkInvariants(t, p)
			if err != nil {
				return
			}
			if d != tt.want || l.State != StateBound || !l.Expires.Equal(t0.Add(d)) || l.IP != addr(tt.ip) {
				t.Errorf("ack = %+v for %s", l, d)
			}
		})
	}
}

func TestGrant(t *testing.T) {
	p := testPool(t, "10.0.0.100", "10.0.0.102")
	for _, tt := range []struct{ want, got time.Duration }{
		{0, time.Hour}, {30 * time.Minute, 30 * time.Minute}, {10 * time.Hour, 4 * time.Hour},
	} {
		if g := p.grant(tt.want); g != tt.got {
			t.Errorf("grant(%s) = %s, want %s", tt.want, g, tt.got)
		}
	}
}

func TestDeclineReleaseOnlyByOwner(t *testing.T) {
	p := testPool(t, "10.0.0.100", "10.0.0.102")
	ip := addr("10.0.0.100")
	if _, _, err := p.ack("c1", macN(1), "", ip, 0, t0); err != nil {
		t.Fatal(err)
	}
	if p.decline("c2", ip, t0) || p.release("c2", ip, t0) {
		t.Fatal("another client declined or released c1's address")
	}
	if !p.release("c1", ip, t0) {
		t.Fatal("owner cannot release")
	}
	if _, _, err := p.ack("c2", macN(2), "", ip, 0, t0); err != nil {
		t.Fatalf("released address not free: %v", err)
	}
	if !p.decline("c2", ip, t0) {
		t.Fatal("owner cannot decline")
	}
	if got, _, _ := p.candidate("c2", macN(2), netip.Addr{}, t0); got == ip {
		t.Fatal("declined address offered again to the client that declined it")
	}
	if _, _, err := p.ack("c3", macN(3), "", ip, 0, t0.Add(time.Minute)); err != errTaken {
		t.Fatalf("declined address acked: %v", err)
	}
	checkInvariants(t, p)
}

func TestRestoreDropsWhatTheConfigNoLongerAllows(t *testing.T) {
	p := testPool(t, "10.0.0.100", "10.0.0.102")
	p.restore([]Lease{
		{IP: addr("10.0.0.100"), Client: "c1", MAC: macN(1), State: StateBound, Expires: t0.Add(time.Hour)},
		{IP: addr("10.0.0.150"), Client: "c2", MAC: macN(2), State: StateBound, Expires: t0.Add(time.Hour)},        // outside the range now
		{IP: addr("10.0.0.3"), Client: "x", MAC: fixedMAC.String(), State: StateBound, Expires: t0.Add(time.Hour)}, // fixed host moved
		{IP: addr("10.0.0.101"), State: StateBad, Expires: t0.Add(time.Minute)},
		{IP: addr("10.0.0.102"), Client: "c3", MAC: macN(3), State: StateOffered, Expires: t0.Add(time.Minute)},
	})
	got := p.records()
	if len(got) != 2 || got[0].IP != addr("10.0.0.100") || got[1].State != StateBad {
		t.Fatalf("restored %+v", got)
	}
	if ip, known, _ := p.candidate("c1", macN(1), netip.Addr{}, t0); ip != addr("10.0.0.100") || !known {
		t.Errorf("restored client gets %s known=%v", ip, known)
	}
	checkInvariants(t, p)
}

func TestBroadcastOf(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24": "10.0.0.255", "192.168.4.0/22": "192.168.7.255", "10.1.2.3/32": "10.1.2.3", "0.0.0.0/0": "255.255.255.255",
	} {
		if got := broadcastOf(netip.MustParsePrefix(in)); got != addr(want) {
			t.Errorf("broadcastOf(%s) = %s, want %s", in, got, want)
		}
	}
}
