package remote

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/testutil"
	"github.com/uplinkd/uplinkd/publish"
)

const (
	dynUser     = "gateway"
	dynPassword = "s3cr3t-Pa55w0rd-never-logged"
)

// testCA is a throw-away certificate authority.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pemDER []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "uplinkd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pemDER: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// file writes the CA certificate to dir and returns its path.
func (ca *testCA) file(t testing.TB, dir, name string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, ca.pemDER, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverCert issues a certificate for localhost and ips (default 127.0.0.1).
func (ca *testCA) serverCert(t testing.TB, ips ...net.IP) tls.Certificate {
	t.Helper()
	if len(ips) == 0 {
		ips = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "dyn.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// dynServer speaks the server side of dyndns2: it checks the credentials
// and answers from a script (then "good <ip>").
type dynServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []dynRequest
	from     []string // the requests' source addresses
	replies  []dynReply
	received chan dynRequest // if set, every request is sent here too
}

type dynRequest struct{ path, hostname, myip, agent, myipv6 string }
type dynReply struct {
	status int
	body   string
}

func newDynServer(t testing.TB, ca *testCA) *dynServer {
	return newDynServerOn(t, ca, nil)
}

// newDynServerOn serves on ln (nil: a loopback port); the certificate
// covers ln's address.
func newDynServerOn(t testing.TB, ca *testCA, ln net.Listener) *dynServer {
	s := &dynServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	var ips []net.IP
	if ln != nil {
		s.Listener.Close()
		s.Listener = ln
		ips = []net.IP{ln.Addr().(*net.TCPAddr).IP}
	}
	if ca != nil {
		s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t, ips...)}}
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func (s *dynServer) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := dynRequest{path: r.URL.Path, hostname: q.Get("hostname"), myip: q.Get("myip"), agent: r.UserAgent(), myipv6: q.Get("myipv6")}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	s.from = append(s.from, host)
	reply := dynReply{200, "good " + req.myip + req.myipv6}
	if len(s.replies) > 0 {
		reply, s.replies = s.replies[0], s.replies[1:]
	}
	ch := s.received
	s.mu.Unlock()
	if ch != nil {
		ch <- req
	}
	if u, p, ok := r.BasicAuth(); !ok || u != dynUser || p != dynPassword {
		reply = dynReply{200, "badauth"}
	}
	w.WriteHeader(reply.status)
	fmt.Fprintln(w, reply.body)
}

func (s *dynServer) script(replies ...dynReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies = replies
}

func (s *dynServer) got() []dynRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func secretFile(t testing.TB, dir, name, content string, mode os.FileMode) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	return p
}

func dynSpec(t testing.TB, srv *dynServer, dir, caFile string) publish.Spec {
	return publish.Spec{Uplink: "dsl", Iface: "ppp0", Name: "dyn", Kind: publish.KindDynDNS2, URL: mustURL(srv.URL),
		CAFile: caFile, Hostname: "home.example.net", Username: dynUser,
		PasswordFile: secretFile(t, dir, "dyn.secret", dynPassword+"\n", 0o600), Timeout: 5 * time.Second}
}

func TestDynDNS2Replies(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	caFile := ca.file(t, dir, "ca.pem")
	srv := newDynServer(t, ca)
	addr := netip.MustParseAddr("198.51.100.10")
	tests := []struct {
		name      string
		reply     dynReply
		password  string // "" = the right one
		want      publish.Outcome
		wantReply string
	}{
		{"good", dynReply{200, "good 198.51.100.10"}, "", publish.OK, "good"},
		{"nochg", dynReply{200, "nochg 198.51.100.10"}, "", publish.OK, "nochg"},
		{"badauth from a wrong password", dynReply{}, "wrong-password", publish.Permanent, "badauth"},
		{"nohost", dynReply{200, "nohost"}, "", publish.Permanent, "nohost"},
		{"notfqdn", dynReply{200, "notfqdn"}, "", publish.Permanent, "notfqdn"},
		{"abuse", dynReply{200, "abuse"}, "", publish.Permanent, "abuse"},
		{"badagent", dynReply{200, "badagent"}, "", publish.Permanent, "badagent"},
		{"!donator", dynReply{200, "!donator"}, "", publish.Permanent, "!donator"},
		{"numhost", dynReply{200, "numhost"}, "", publish.Permanent, "numhost"},
		{"911", dynReply{200, "911"}, "", publish.Retry, "911"},
		{"dnserr", dynReply{200, "dnserr"}, "", publish.Retry, "dnserr"},
		{"HTTP 500", dynReply{500, "oops"}, "", publish.Retry, "500 Internal Server Error"},
		{"HTTP 503", dynReply{503, ""}, "", publish.Retry, "503 Service Unavailable"},
		{"HTTP 401 without body", dynReply{401, ""}, "", publish.Permanent, "badauth"},
		{"HTTP 404: wrong URL", dynReply{404, "not found"}, "", publish.Permanent, "404 Not Found"},
		{"garbage", dynReply{200, "<html>hello</html>"}, "", publish.Retry, "<html>hello</html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := dynSpec(t, srv, t.TempDir(), caFile)
			if tt.password != "" {
				spec.PasswordFile = secretFile(t, t.TempDir(), "pw", tt.password, 0o600)
			}
			if tt.reply.status != 0 {
				srv.script(tt.reply)
			}
			p, err := New(spec, publish.PublisherOptions{Log: quiet(), Version: "1.2.3"})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), publish.Request{Addr: addr})
			if res.Outcome != tt.want || res.Reply != tt.wantReply {
				t.Fatalf("got %v %q (%v), want %v %q", res.Outcome, res.Reply, res.Err, tt.want, tt.wantReply)
			}
			if (res.Err == nil) != (tt.want == publish.OK) {
				t.Fatalf("err %v", res.Err)
			}
			if res.Err != nil && strings.Contains(res.Err.Error(), dynPassword) {
				t.Fatal("error reveals the password")
			}
			reqs := srv.got()
			last := reqs[len(reqs)-1]
			if last != (dynRequest{"/nic/update", "home.example.net", "198.51.100.10", "uplinkd/1.2.3", ""}) {
				t.Fatalf("request %+v", last)
			}
		})
	}
}

func TestDynDNS2TLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	srv := newDynServer(t, ca)
	plain := newDynServer(t, nil)
	addr := netip.MustParseAddr("203.0.113.5")
	tests := []struct {
		name    string
		srv     *dynServer
		url     string // "" = srv.URL
		caFile  string
		want    publish.Outcome
		errText string
	}{
		{"certificate from the private CA", srv, "", ca.file(t, dir, "ca.pem"), publish.OK, ""},
		{"base path kept", srv, srv.URL + "/dyn/", ca.file(t, dir, "ca.pem"), publish.OK, ""},
		{"wrong CA", srv, "", other.file(t, dir, "other.pem"), publish.Retry, "certificate signed by unknown authority"},
		{"system roots do not know the test CA", srv, "", "", publish.Retry, "certificate signed by unknown authority"},
		{"plain http when configured", plain, "", "", publish.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := dynSpec(t, tt.srv, t.TempDir(), tt.caFile)
			if tt.url != "" {
				spec.URL = mustURL(tt.url)
			}
			p, err := New(spec, publish.PublisherOptions{Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), publish.Request{Addr: addr})
			if res.Outcome != tt.want || (tt.errText != "" && (res.Err == nil || !strings.Contains(res.Err.Error(), tt.errText))) {
				t.Fatalf("got %v %v, want %v %q", res.Outcome, res.Err, tt.want, tt.errText)
			}
		})
	}
	reqs := srv.got()
	if len(reqs) != 2 || reqs[1].path != "/dyn/nic/update" {
		t.Fatalf("server saw %+v", reqs)
	}
}

func TestDynDNS2SecretFile(t *testing.T) {
	dir := t.TempDir()
	srv := newDynServer(t, nil)
	tests := []struct {
		name string
		mode os.FileMode
		url  string
		want string
	}{
		{"group readable", 0o640, "", "mode 0640 gives group or others access"},
		{"world readable", 0o604, "", "mode 0604 gives group or others access"},
		{"user info in URL", 0o600, "http://me:pw@127.0.0.1/", "must not contain user info"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := dynSpec(t, srv, t.TempDir(), "")
			os.Chmod(spec.PasswordFile, tt.mode)
			if tt.url != "" {
				spec.URL = mustURL(tt.url)
			}
			_, err := New(spec, publish.PublisherOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), dynPassword) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	// Loosened after load: refused at publish time, permanent, no request.
	spec := dynSpec(t, srv, dir, "")
	p, err := New(spec, publish.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(spec.PasswordFile, 0o644)
	res := p.Publish(context.Background(), publish.Request{Addr: addrA})
	if res.Outcome != publish.Permanent || !strings.Contains(res.Err.Error(), spec.PasswordFile) || len(srv.got()) != 0 {
		t.Fatalf("got %v %v, %d requests", res.Outcome, res.Err, len(srv.got()))
	}
}

// TestDynDNS2Manager drives the real dyndns2 publisher through the manager:
// a 5xx is retried after the backoff and then succeeds, a redial publishes
// once with the new address, badauth stops the publisher, and the password
// appears in no log record, status or event.
func TestDynDNS2Manager(t *testing.T) {
	defer noLeaks(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	srv := newDynServer(t, ca)
	spec := dynSpec(t, srv, dir, ca.file(t, dir, "ca.pem"))
	spec.Settle, spec.MinInterval, spec.Refresh = 2*time.Second, 30*time.Second, 0
	log, logs := testutil.NewCapture()
	clock := hooks.NewFakeClock(time.Time{})
	var mu sync.Mutex
	var events []publish.Event
	m, err := publish.NewManager([]publish.Spec{spec}, publish.Options{StateDir: filepath.Join(dir, "state"), Log: log, Clock: clock, Version: "t",
		OnResult: func(ev publish.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() },
		Rand:     func() float64 { return 0.5 }}) // no jitter: exact backoff
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	waitEvents := func(n int) {
		t.Helper()
		testutil.WaitFor(t, "publish", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(events) >= n })
	}
	myips := func() []string {
		var out []string
		for _, r := range srv.got() {
			out = append(out, r.myip)
		}
		return out
	}

	srv.script(dynReply{503, "busy"})
	m.Update("dsl", addrA)
	clock.Advance(2 * time.Second)
	waitEvents(1)
	clock.WaitForTimers(1, time.Second)
	if p := clock.Pending(); len(p) != 1 || p[0] != publish.Backoff {
		t.Fatalf("pending %v, want [%v]", p, publish.Backoff)
	}
	clock.Advance(publish.Backoff)
	waitEvents(2)
	if got := myips(); !slices.Equal(got, []string{"198.51.100.10", "198.51.100.10"}) {
		t.Fatalf("requests %q", got)
	}

	// Redial: the address goes away, a new one comes.
	m.Update("dsl", netip.Addr{})
	clock.Advance(10 * time.Second)
	m.Update("dsl", addrB)
	clock.Advance(time.Minute)
	waitEvents(3)
	clock.Advance(time.Hour)
	waitIdle(t, m)
	if got := myips(); !slices.Equal(got, []string{"198.51.100.10", "198.51.100.10", "198.51.100.11"}) {
		t.Fatalf("requests %q", got)
	}

	// The password file now holds a wrong password: badauth, once.
	os.WriteFile(spec.PasswordFile, []byte("Wr0ng-second-Secret\n"), 0o600)
	m.Update("dsl", addrC)
	clock.Advance(time.Minute)
	waitEvents(4)
	for range 5 {
		clock.Advance(time.Hour)
	}
	waitIdle(t, m)
	if n := len(srv.got()); n != 4 {
		t.Fatalf("%d requests after badauth, want 4", n)
	}
	st := m.Status()[0]
	if st.Result != "permanent" || st.Reply != "badauth" || st.Address != addrB {
		t.Fatalf("status %+v", st)
	}
	mu.Lock()
	results := []string{}
	for _, ev := range events {
		results = append(results, ev.Result)
	}
	mu.Unlock()
	if !slices.Equal(results, []string{"retry", "ok", "ok", "permanent"}) {
		t.Fatalf("results %q", results)
	}
	if len(logs.Find(t, "publish failed permanently; fix the config and reload", map[string]any{"level": "ERROR", "event": "publish", "reply": "badauth"})) != 1 ||
		len(logs.Find(t, "address published", map[string]any{"event": "publish", "uplink": "dsl", "new_ip": "198.51.100.11", "old_ip": "198.51.100.10"})) != 1 {
		t.Fatalf("log records: %v", logs.Records(t))
	}
	m.Close()
	everything := logs.String() + fmt.Sprintf("%+v %+v", m.Status(), events)
	if strings.Contains(everything, dynPassword) || strings.Contains(everything, "Wr0ng-second-Secret") {
		t.Fatal("a password leaked into logs, status or events")
	}
}
