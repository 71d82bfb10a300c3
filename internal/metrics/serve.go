package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The endpoint is a minimal HTTP/1.x server written here rather than
// net/http's, which would link net/http, crypto/tls and crypto/x509 into
// the daemon for one GET; see doc.go. It serves one request per connection
// and closes it (Connection: close): a scrape every few seconds gains
// nothing from keep-alive, and the server stays a loop over a few reads.
const (
	// maxConns bounds the connections served at once. More wait, not
	// accepted, in the listen backlog until one ends (connTimeout at most):
	// a Prometheus or two scrape here, so waiting costs them little, and
	// refusing would need a goroutine to accept and close them anyway.
	maxConns = 8
	// maxHead caps the request line and headers; a scraper's are a few
	// hundred bytes. Larger heads get 431.
	maxHead = 8 << 10
	// connTimeout is how long a client has to send its request and take
	// the response; the endpoint answers from memory at once.
	connTimeout = 10 * time.Second
	// lingerTimeout and maxLinger bound reading what a client still sends
	// after the response (see linger).
	lingerTimeout = 500 * time.Millisecond
	maxLinger     = 64 << 10
)

// Serve answers GET /metrics on addr (host:port) with r's series and the
// process's own until ctx ends. It returns an error at once when addr
// cannot be listened on, and otherwise only after the server and all its
// connections have ended.
func Serve(ctx context.Context, addr string, r *Registry) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return ServeListener(ctx, ln, r)
}

// ServeListener is Serve on a listener the caller opened; it closes ln.
// It returns nil when ctx ends, after every connection has been closed:
// ending ctx also ends the connections, a half-sent request included.
func ServeListener(ctx context.Context, ln net.Listener, r *Registry) error {
	if r == nil {
		ln.Close()
		return errors.New("metrics: no registry")
	}
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() }) // ends Accept
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxConns)
	var delay time.Duration // after a temporary Accept error
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := ln.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			if !temporary(err) {
				return fmt.Errorf("metrics: %w", err)
			}
			// Out of file descriptors or memory: wait and retry, as
			// net/http's server did, rather than end the endpoint.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			slog.Warn("metrics: accept failed, retrying", "event", "metrics", "reason", err.Error(), slog.Duration("retry_in", delay))
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		wg.Go(func() {
			defer func() { <-sem }()
			serveConn(ctx, c, r)
		})
	}
}

// temporary reports whether an Accept error may go away by itself.
func temporary(err error) bool {
	for _, errno := range [...]syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// serveConn answers the one request on c and closes it.
func serveConn(ctx context.Context, c net.Conn, r *Registry) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(connTimeout))
	// Closing, not a deadline, so that nothing later can push it back.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	method, path, status := readRequest(c)
	var body []byte
	extra := ""
	switch {
	case status != 0:
	case path != "/metrics":
		status = 404
	case method != "GET" && method != "HEAD":
		status, extra = 405, "Allow: GET, HEAD\r\n"
	default:
		var b bytes.Buffer
		r.writeTo(&b)
		status, body = 200, b.Bytes()
	}
	if status < 0 {
		return // the client went away, timed out, or we are shutting down
	}
	ctype := "text/plain; version=0.0.4; charset=utf-8"
	if status != 200 {
		ctype = "text/plain; charset=utf-8"
		body = []byte(statusText(status) + "\n")
	}
	head := "HTTP/1.1 " + strconv.Itoa(status) + " " + statusText(status) + "\r\n" +
		"Content-Type: " + ctype + "\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		extra + "Connection: close\r\n\r\n"
	if method == "HEAD" {
		body = nil // the headers of a GET, no body
	}
	bufs := net.Buffers{[]byte(head), body}
	if _, err := bufs.WriteTo(c); err == nil {
		linger(c)
	}
}

// statusText is a function, not a map, so that metrics off allocates
// nothing.
func statusText(status int) string {
	switch status {
	case 200:
		return "OK"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 431:
		return "Request Header Fields Too Large"
	}
	return "Bad Request"
}

// readRequest reads the request head from c: the request line, then
// headers it discards up to the blank line. status is 0 for a request to
// route, 400 or 431 for one to refuse, and -1 when there is nothing to
// answer (the connection ended or timed out first). A malformed request
// line is refused as soon as it is in, without waiting for the headers.
func readRequest(c net.Conn) (method, path string, status int) {
	buf := make([]byte, 0, maxHead)
	for {
		if len(buf) == cap(buf) {
			return method, "", 431
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if method == "" {
			if i := bytes.IndexByte(buf, '\n'); i >= 0 {
				var ok bool
				if method, path, ok = parseRequestLine(string(bytes.TrimSuffix(buf[:i], []byte("\r")))); !ok {
					return "", "", 400
				}
			}
		}
		if method != "" && (bytes.Contains(buf, []byte("\n\n")) || bytes.Contains(buf, []byte("\n\r\n"))) {
			return method, path, 0
		}
		if err != nil {
			return method, "", -1
		}
	}
}

// tokenChars are the characters of an HTTP token, such as a method.
const tokenChars = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// parseRequestLine parses "METHOD TARGET HTTP/1.x" and returns the method
// and the target's path (without its query).
func parseRequestLine(line string) (method, path string, ok bool) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || strings.Trim(method, tokenChars) != "" ||
		len(proto) != len("HTTP/1.x") || !strings.HasPrefix(proto, "HTTP/1.") || proto[7] < '0' || proto[7] > '9' {
		return "", "", false
	}
	// The absolute form (GET http://host/metrics) is for proxies, but
	// servers must take it too.
	for _, scheme := range [...]string{"http://", "https://"} {
		if rest, ok := strings.CutPrefix(target, scheme); ok {
			target = "/"
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				target = rest[i:]
			}
		}
	}
	if target != "*" && !strings.HasPrefix(target, "/") {
		return "", "", false
	}
	path, _, _ = strings.Cut(target, "?")
	return method, path, true
}

// linger lets the client read the response before the connection closes.
// Closing a socket with unread bytes in it (a POST's body, the rest of an
// oversized head) makes the kernel send a reset, which can destroy the
// response on its way; so linger ends the sending side and reads what is
// still coming, for a short while, before the close.
func linger(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, io.LimitReader(c, maxLinger))
}
