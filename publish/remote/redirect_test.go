package remote

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/uplinkd/uplinkd/publish"
)

// credSink is a server that answers every request "good" and records the
// Authorization header of each.
type credSink struct {
	*httptest.Server
	mu    sync.Mutex
	auths []string
}

func newCredSink(t *testing.T, ca *testCA) *credSink {
	s := &credSink{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		s.mu.Unlock()
		fmt.Fprintln(w, "good "+r.URL.Query().Get("myip"))
	}))
	if ca != nil {
		s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}}
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func (s *credSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auths...)
}

// TestDynDNS2Redirects (issue 17.1): the dyndns2 client sends Basic
// credentials, so it follows a redirect only to the same scheme, host and
// port. A server (real TLS, loopback) that redirects to plain HTTP, or to
// another port, gets the publish failed for good, and the other listener
// receives no request at all, so no credentials.
func TestDynDNS2Redirects(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	caFile := ca.file(t, dir, "ca.pem")
	plain := newCredSink(t, nil)
	otherTLS := newCredSink(t, ca)
	var redirectTo string
	var mu sync.Mutex
	srv := newCredSink(t, ca)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		to := redirectTo
		mu.Unlock()
		if r.URL.Path == "/nic/update" {
			if to == "" {
				to = "/v2/nic/update" // same origin
			}
			http.Redirect(w, r, to+"?"+r.URL.RawQuery, http.StatusFound)
			return
		}
		srv.mu.Lock()
		srv.auths = append(srv.auths, r.Header.Get("Authorization"))
		srv.mu.Unlock()
		fmt.Fprintln(w, "good "+r.URL.Query().Get("myip"))
	})
	tests := []struct {
		name string
		to   string // "" = a path on the same server
		sink *credSink
		want publish.Outcome
	}{
		{"https to plain http", plain.URL + "/nic/update", plain, publish.Permanent},
		{"https to another port", otherTLS.URL + "/nic/update", otherTLS, publish.Permanent},
		{"same scheme, host and port", "", srv, publish.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			redirectTo = tt.to
			mu.Unlock()
			before := len(tt.sink.got())
			spec := dynSpec(t, &dynServer{Server: srv.Server}, t.TempDir(), caFile)
			p, err := New(spec, publish.PublisherOptions{Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			res := p.Publish(context.Background(), publish.Request{Addr: netip.MustParseAddr("203.0.113.9")})
			if res.Outcome != tt.want {
				t.Fatalf("outcome %v (%v), want %v", res.Outcome, res.Err, tt.want)
			}
			got := tt.sink.got()[before:]
			if tt.want == publish.OK {
				if len(got) != 1 || got[0] == "" {
					t.Fatalf("same-origin redirect: the target saw %q, want one request with the credentials", got)
				}
				return
			}
			if len(got) != 0 {
				t.Fatalf("the redirect target received %d requests (Authorization %q)", len(got), got)
			}
			if res.Err == nil || !strings.Contains(res.Err.Error(), "redirect") || strings.Contains(res.Err.Error(), dynPassword) {
				t.Fatalf("error %v", res.Err)
			}
		})
	}
}
