package remote

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/publish"
)

// knot is a real Knot DNS server, started by the test with one zone that
// accepts TSIG-signed updates.
type knot struct {
	addr    string // ip:port
	zone    string
	keyFile string // BIND format, mode 0600
	keyName string
	secret  string
	// dial, if set, opens the test's own query connections (a server in a
	// lab namespace).
	dial func(network, address string) (net.Conn, error)
}

func randomSecret(t testing.TB) string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func writeKeyFile(t testing.TB, dir, name, alg, secret string) string {
	return secretFile(t, dir, name+".key", fmt.Sprintf("key \"%s\" {\n\talgorithm %s;\n\tsecret \"%s\";\n};\n", name, alg, secret), 0o600)
}

// freePort finds a port free for both UDP and TCP on 127.0.0.1.
func freePort(t testing.TB) int {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func knotBinary(t testing.TB) string {
	for _, p := range []string{"knotd", "/usr/sbin/knotd"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	t.Skip("knotd not installed (scripts/deps.sh installs it)")
	return ""
}

// knotConfig writes a zone, a key and a knotd config listening on ip:port
// into a fresh directory and returns the server and the config's path.
func knotConfig(t testing.TB, ip string, port int) (*knot, string) {
	dir := t.TempDir()
	k := &knot{addr: net.JoinHostPort(ip, fmt.Sprint(port)), zone: "example.test", keyName: "uplinkd-test", secret: randomSecret(t)}
	k.keyFile = writeKeyFile(t, dir, k.keyName, "hmac-sha256", k.secret)
	zone := `$ORIGIN example.test.
$TTL 3600
@	SOA	ns1 hostmaster 1 3600 900 604800 60
@	NS	ns1
ns1	A	127.0.0.1
home	A	192.0.2.99
`
	os.WriteFile(filepath.Join(dir, "example.test.zone"), []byte(zone), 0o644)
	os.Mkdir(filepath.Join(dir, "db"), 0o700) // knot does not create it; updates fail with SERVFAIL without it
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: %[2]s@%[3]d
log:
  - target: stderr
    any: warning
database:
    storage: "%[1]s/db"
    # No fsync per update: the tests measure uplinkd, not the disk.
    journal-db-mode: asynchronous
control:
    listen: "%[1]s/knot.sock"
key:
  - id: %[4]s
    algorithm: hmac-sha256
    secret: %[5]s
acl:
  - id: update
    key: %[4]s
    action: update
zone:
  - domain: example.test
    storage: "%[1]s"
    file: "example.test.zone"
    zonefile-sync: -1
    journal-content: none
    acl: update
`, dir, ip, port, k.keyName, k.secret)
	cf := filepath.Join(dir, "knot.conf")
	os.WriteFile(cf, []byte(conf), 0o644)
	return k, cf
}

// waitReady polls the server until it answers for its zone.
func (k *knot) waitReady(t testing.TB, exited <-chan struct{}, output func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := k.query(t, "example.test.", dns.TypeSOA); err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("knotd exited: %s", output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("knotd does not answer: %s", output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startKnot runs knotd on 127.0.0.1.
func startKnot(t testing.TB) *knot {
	t.Helper()
	bin := knotBinary(t)
	k, cf := knotConfig(t, "127.0.0.1", freePort(t))
	cmd := exec.Command(bin, "-c", cf)
	out := &lab.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Dies with the test binary, even when it is killed by a timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	k.waitReady(t, exited, out.String)
	return k
}

// query asks the server and returns the answer's records as text.
func (k *knot) query(t testing.TB, name string, qtype uint16) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: time.Second}
	var r *dns.Msg
	var err error
	if k.dial != nil {
		var conn net.Conn
		if conn, err = k.dial("udp", k.addr); err != nil {
			return nil, err
		}
		defer conn.Close()
		r, _, err = c.ExchangeWithConn(m, &dns.Conn{Conn: conn})
	} else {
		r, _, err = c.Exchange(m, k.addr)
	}
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, fmt.Sprintf("%s %d", rr.A, rr.Hdr.Ttl))
		case *dns.AAAA:
			out = append(out, fmt.Sprintf("%s %d", rr.AAAA, rr.Hdr.Ttl))
		default:
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

func (k *knot) spec() publish.Spec {
	return publish.Spec{Uplink: "dsl", Iface: "ppp0", Name: "dns", Kind: publish.KindRFC2136, Server: k.addr, Zone: k.zone,
		Hostname: "home.example.test", KeyFile: k.keyFile, TTL: 60 * time.Second, Timeout: 5 * time.Second}
}

func TestRFC2136Knot(t *testing.T) {
	k := startKnot(t)
	p, err := New(k.spec(), publish.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.51.100.10", "198.51.100.11"} {
		res := p.Publish(context.Background(), publish.Request{Addr: netip.MustParseAddr(a)})
		if res.Outcome != publish.OK || res.Reply != "NOERROR" {
			t.Fatalf("publish %s: %v %q %v", a, res.Outcome, res.Reply, res.Err)
		}
		// The record is replaced, not added to.
		got, err := k.query(t, "home.example.test.", dns.TypeA)
		if err != nil || !slices.Equal(got, []string{a + " 60"}) {
			t.Fatalf("after publishing %s the server answers %q %v", a, got, err)
		}
	}
	res := p.Publish(context.Background(), publish.Request{Addr: netip.MustParseAddr("2001:db8::7")})
	if got, _ := k.query(t, "home.example.test.", dns.TypeAAAA); res.Outcome != publish.OK || !slices.Equal(got, []string{"2001:db8::7 60"}) {
		t.Fatalf("AAAA: %v %v %q", res.Outcome, res.Err, got)
	}

	dir := t.TempDir()
	tests := []struct {
		name  string
		spec  func(*publish.Spec)
		reply string
	}{
		{"wrong secret", func(s *publish.Spec) { s.KeyFile = writeKeyFile(t, dir, k.keyName, "hmac-sha256", randomSecret(t)) }, "NOTAUTH/BADSIG"},
		{"unknown key", func(s *publish.Spec) { s.KeyFile = writeKeyFile(t, dir, "stranger", "hmac-sha256", k.secret) }, "NOTAUTH/BADKEY"},
		{"wrong algorithm", func(s *publish.Spec) { s.KeyFile = writeKeyFile(t, dir, k.keyName, "hmac-sha512", k.secret) }, "NOTAUTH/BADKEY"},
		{"zone not served", func(s *publish.Spec) { s.Zone, s.Hostname = "other.test", "home.other.test" }, "NOTAUTH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := k.spec()
			tt.spec(&spec)
			p, err := New(spec, publish.PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), publish.Request{Addr: netip.MustParseAddr("203.0.113.66")})
			if res.Outcome != publish.Permanent || !strings.HasPrefix(res.Reply, tt.reply) {
				t.Fatalf("got %v %q %v, want permanent %q", res.Outcome, res.Reply, res.Err, tt.reply)
			}
			if got, _ := k.query(t, "home.example.test.", dns.TypeA); !slices.Equal(got, []string{"198.51.100.11 60"}) {
				t.Fatalf("a refused update changed the zone: %q", got)
			}
		})
	}
}

// TestRFC2136KnotManager: through the manager, a redial publishes the new
// address once and a real query returns it.
func TestRFC2136KnotManager(t *testing.T) {
	defer noLeaks(t)
	k := startKnot(t)
	spec := k.spec()
	spec.Settle, spec.MinInterval = 2*time.Second, 0
	clock := hooks.NewFakeClock(time.Time{})
	results := make(chan publish.Event, 10)
	m, err := publish.NewManager([]publish.Spec{spec}, publish.Options{StateDir: t.TempDir(), Log: quiet(), Clock: clock,
		OnResult: func(ev publish.Event) { results <- ev }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, a := range []netip.Addr{addrA, {}, addrB} {
		m.Update("dsl", a)
		clock.Advance(time.Second)
	}
	clock.Advance(time.Second)
	select {
	case ev := <-results:
		if ev.Result != "ok" || ev.NewIP != addrB || ev.OldIP.IsValid() {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no publish")
	}
	if got, _ := k.query(t, "home.example.test.", dns.TypeA); !slices.Equal(got, []string{"198.51.100.11 60"}) {
		t.Fatalf("server answers %q", got)
	}
	clock.Advance(time.Hour)
	waitAttempts(t, m) // an attempt the hour started has finished and sent its result
	select {
	case ev := <-results:
		t.Fatalf("second publish %+v", ev)
	default:
	}
}

// TestRFC2136TruncationAndServfail uses a scripted server (miekg/dns) for
// what a real server does not do on demand: a truncated UDP reply must be
// retried over TCP, SERVFAIL must be retried later.
func TestRFC2136TruncationAndServfail(t *testing.T) {
	secret := randomSecret(t)
	keyFile := writeKeyFile(t, t.TempDir(), "k", "hmac-sha256", secret)
	tests := []struct {
		name      string
		udp, tcp  int // rcode; -1 = truncated
		want      publish.Outcome
		wantReply string
		wantTCP   bool
	}{
		{"truncated over UDP, answered over TCP", -1, dns.RcodeSuccess, publish.OK, "NOERROR", true},
		{"SERVFAIL", dns.RcodeServerFailure, 0, publish.Retry, "SERVFAIL", false},
		{"REFUSED", dns.RcodeRefused, 0, publish.Permanent, "REFUSED", false},
		{"NOTZONE", dns.RcodeNotZone, 0, publish.Permanent, "NOTZONE", false},
		{"YXDOMAIN", dns.RcodeYXDomain, 0, publish.Permanent, "YXDOMAIN", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			sawTCP := make(chan bool, 4)
			handler := func(rcode int, tcp bool) dns.HandlerFunc {
				return func(w dns.ResponseWriter, req *dns.Msg) {
					sawTCP <- tcp
					m := new(dns.Msg)
					m.SetReply(req)
					if w.TsigStatus() != nil {
						m.Rcode = dns.RcodeNotAuth
					} else if rcode < 0 {
						m.Truncated = true
					} else {
						m.Rcode = rcode
					}
					m.SetTsig("k.", dns.HmacSHA256, 300, time.Now().Unix())
					w.WriteMsg(m)
				}
			}
			secrets := map[string]string{"k.": secret}
			ready := make(chan struct{}, 2)
			servers := []*dns.Server{
				{Addr: addr, Net: "udp", MsgAcceptFunc: acceptAll, TsigSecret: secrets, Handler: handler(tt.udp, false), NotifyStartedFunc: func() { ready <- struct{}{} }},
				{Addr: addr, Net: "tcp", MsgAcceptFunc: acceptAll, TsigSecret: secrets, Handler: handler(tt.tcp, true), NotifyStartedFunc: func() { ready <- struct{}{} }},
			}
			for _, s := range servers {
				go s.ListenAndServe()
				defer s.Shutdown()
			}
			<-ready
			<-ready
			p, err := New(publish.Spec{Kind: publish.KindRFC2136, Server: addr, Zone: "example.test", Hostname: "h.example.test", KeyFile: keyFile}, publish.PublisherOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), publish.Request{Addr: addrA})
			if res.Outcome != tt.want || res.Reply != tt.wantReply {
				t.Fatalf("got %v %q %v", res.Outcome, res.Reply, res.Err)
			}
			var transports []bool
			for range len(sawTCP) {
				transports = append(transports, <-sawTCP)
			}
			want := []bool{false}
			if tt.wantTCP {
				want = []bool{false, true}
			}
			if !slices.Equal(transports, want) {
				t.Fatalf("transports (tcp?) %v, want %v", transports, want)
			}
		})
	}
}

// acceptAll lets the scripted server see UPDATEs (the default refuses them).
func acceptAll(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }

func TestParseTSIGKeyFile(t *testing.T) {
	dir := t.TempDir()
	secret := "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="
	tests := []struct {
		name, content string
		mode          os.FileMode
		wantAlg       string
		wantErr       string
	}{
		{"tsig-keygen output", "key \"ddns-key.home\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + secret + "\";\n};\n", 0o600, dns.HmacSHA256, ""},
		{"comments and one line", "# made by hand\n// another\n/* block */ key ddns { algorithm HMAC-SHA512; secret \"" + secret + "\"; };", 0o400, dns.HmacSHA512, ""},
		{"sha1", `key "k" { secret "` + secret + `"; algorithm hmac-sha1; };`, 0o600, dns.HmacSHA1, ""},
		{"md5", `key "k" { algorithm hmac-md5; secret "` + secret + `"; };`, 0o600, dns.HmacMD5, ""},
		{"group readable", `key "k" { algorithm hmac-sha256; secret "` + secret + `"; };`, 0o640, "", "mode 0640 gives group or others access"},
		{"bad algorithm", `key "k" { algorithm rot13; secret "` + secret + `"; };`, 0o600, "", `unsupported algorithm "rot13"`},
		{"no secret", `key "k" { algorithm hmac-sha256; };`, 0o600, "", "algorithm and secret are required"},
		{"not base64", `key "k" { algorithm hmac-sha256; secret "%%%` + secret + `"; };`, 0o600, "", "secret is not base64"},
		{"knot yaml", "key:\n  - id: k\n    secret: " + secret + "\n", 0o600, "", "no key statement"},
		{"unterminated", `key "k" { algorithm hmac-sha256; secret "` + secret, 0o600, "", "unterminated string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := secretFile(t, dir, strings.ReplaceAll(tt.name, " ", "_"), tt.content, tt.mode)
			k, err := parseTSIGKeyFile(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), secret) {
					t.Fatalf("error %v, want %q naming the file and not the secret", err, tt.wantErr)
				}
				return
			}
			if err != nil || k.algorithm != tt.wantAlg || k.secret != secret {
				t.Fatalf("got %+v %v", k, err)
			}
		})
	}
}
