package metrics

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// exchange sends raw on a new connection to addr and reads the response
// (for method, which tells whether it has a body), its body, and then
// that the server closed the connection.
func exchange(t *testing.T, addr, raw, method string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the response: %d bytes, %v; want the connection closed", n, err)
	}
	return resp, string(body)
}

// TestServeRequests: the endpoint's answers, over real TCP.
func TestServeRequests(t *testing.T) {
	r := New()
	r.Repair()
	addr := strings.TrimSuffix(strings.TrimPrefix(serve(t, r), "http://"), "/metrics")
	const metricsType = "text/plain; version=0.0.4; charset=utf-8"
	for _, tc := range []struct {
		name, req, method string
		status            int
		ctype, allow      string
		body              string // in the body; "" for HEAD: none at all
	}{
		{"GET", "GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: Prometheus/3.0\r\nAccept: */*\r\n\r\n", "GET", 200, metricsType, "", "uplinkd_repairs_total 1\n"},
		{"HTTP/1.0 and a query", "GET /metrics?x=1 HTTP/1.0\r\n\r\n", "GET", 200, metricsType, "", "uplinkd_repairs_total 1\n"},
		{"bare LF", "GET /metrics HTTP/1.1\nHost: x\n\n", "GET", 200, metricsType, "", "uplinkd_repairs_total 1\n"},
		{"absolute form", "GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 200, metricsType, "", "uplinkd_repairs_total 1\n"},
		{"HEAD", "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD", 200, metricsType, "", ""},
		{"other path", "GET /other HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 404, "text/plain; charset=utf-8", "", "Not Found\n"},
		{"trailing slash", "GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 404, "text/plain; charset=utf-8", "", "Not Found\n"},
		{"HEAD other path", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD", 404, "text/plain; charset=utf-8", "", ""},
		{"POST", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "POST", 405, "text/plain; charset=utf-8", "GET, HEAD", "Method Not Allowed\n"},
		{"lowercase method", "get /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "GET", 405, "text/plain; charset=utf-8", "GET, HEAD", "Method Not Allowed\n"},
		{"garbage", "garbage\r\n\r\n", "GET", 400, "text/plain; charset=utf-8", "", "Bad Request\n"},
		{"garbage, no blank line", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", "GET", 400, "text/plain; charset=utf-8", "", "Bad Request\n"},
		{"HTTP/2", "GET /metrics HTTP/2.0\r\n\r\n", "GET", 400, "text/plain; charset=utf-8", "", "Bad Request\n"},
		{"no protocol", "GET /metrics\r\n\r\n", "GET", 400, "text/plain; charset=utf-8", "", "Bad Request\n"},
		{"relative target", "GET metrics HTTP/1.1\r\n\r\n", "GET", 400, "text/plain; charset=utf-8", "", "Bad Request\n"},
		{"head over the cap", "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", maxHead) + "\r\n\r\n", "GET", 431, "text/plain; charset=utf-8", "", "Request Header Fields Too Large\n"},
		{"request line over the cap", "GET /" + strings.Repeat("a", maxHead) + " HTTP/1.1\r\n\r\n", "GET", 431, "text/plain; charset=utf-8", "", "Request Header Fields Too Large\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := exchange(t, addr, tc.req, tc.method)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if !resp.Close { // ReadResponse takes Connection: close out of the header
				t.Errorf("no Connection: close: %v", resp.Header)
			}
			cl, err := strconv.Atoi(resp.Header.Get("Content-Length"))
			if err != nil || cl <= 0 {
				t.Errorf("Content-Length %q", resp.Header.Get("Content-Length"))
			}
			if tc.method == "HEAD" {
				if body != "" {
					t.Errorf("a body for HEAD: %q", body)
				}
				return
			}
			if cl != len(body) {
				t.Errorf("Content-Length %d, body %d bytes", cl, len(body))
			}
			if !strings.Contains(body, tc.body) {
				t.Errorf("body lacks %q:\n%.300s", tc.body, body)
			}
		})
	}
}

// TestServeBoundsConnections: with maxConns connections open and silent,
// the next one waits for a free one, and is then served.
func TestServeBoundsConnections(t *testing.T) {
	addr := strings.TrimSuffix(strings.TrimPrefix(serve(t, New()), "http://"), "/metrics")
	var idle []net.Conn
	for range maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("served past the bound: %d bytes, %v", n, err)
	}
	idle[0].Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
}
