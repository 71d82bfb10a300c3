package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultPath           = "/run/uplinkd/uplinkd.sock"
	DefaultMaxRequest     = 64 << 10
	DefaultDeadline       = 2 * time.Second
	DefaultMaxConns       = 16
	DefaultHandlerTimeout = 10 * time.Second
)

// Options configure Listen and Serve. Zero values take the defaults above,
// except Group.
type Options struct {
	Path string
	// Group is the gid allowed besides root (mode 0660); -1 for none (mode
	// 0600). The config's control_group, resolved. 0 is the root group,
	// not "none".
	Group  int
	Logger *slog.Logger
	// MaxRequest is the largest request accepted, in bytes.
	MaxRequest int
	// Deadline bounds reading the request and writing the response.
	Deadline time.Duration
	// MaxConns bounds the connections served at once; more are answered
	// "busy" at once.
	MaxConns int
	// HandlerTimeout bounds each Handler call.
	HandlerTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Path == "" {
		o.Path = DefaultPath
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxRequest <= 0 {
		o.MaxRequest = DefaultMaxRequest
	}
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.HandlerTimeout <= 0 {
		o.HandlerTimeout = DefaultHandlerTimeout
	}
}

// Serve listens on opts.Path and answers requests with h until ctx ends:
// Listen and Socket.Serve in one call.
func Serve(ctx context.Context, opts Options, h Handler) error {
	sock, err := Listen(opts)
	if err != nil {
		return err
	}
	return sock.Serve(ctx, h)
}

// Socket is a control socket set up by Listen. Clients that connect before
// Serve runs wait in the listen backlog.
type Socket struct {
	opts Options
	ln   *net.UnixListener
	fi   os.FileInfo // the socket file as created, to remove only our own
	once sync.Once
}

// Listen sets up the socket: creates its directory (0755) if missing,
// removes a stale socket nothing answers on, refuses when another daemon
// answers, and gives the socket its mode (0600, or 0660 with opts.Group)
// before it appears under its name. The daemon calls it before its first
// pass, so that a second instance stops before it touches the kernel.
func Listen(opts Options) (*Socket, error) {
	opts.defaults()
	ln, fi, err := listen(opts.Path, opts.Group)
	if err != nil {
		return nil, err
	}
	opts.Logger.Info("control socket listening", "event", "control-listen", "path", opts.Path, "group", opts.Group)
	return &Socket{opts: opts, ln: ln, fi: fi}, nil
}

// Serve answers requests with h until ctx ends. It returns only after every
// goroutine it started has ended, and it closes and removes the socket.
// Call it once.
func (sock *Socket) Serve(ctx context.Context, h Handler) error {
	defer sock.Close()
	s := &server{
		opts:    sock.opts,
		h:       h,
		log:     sock.opts.Logger,
		slots:   make(chan struct{}, sock.opts.MaxConns),
		conns:   map[net.Conn]struct{}{},
		refused: map[uint32]bool{},
		self:    uint32(os.Geteuid()),
	}
	s.serve(ctx, sock.ln)
	return nil
}

// Close closes the socket and removes its file, for a daemon that stops
// before it calls Serve. Serve calls it too; more calls do nothing.
func (sock *Socket) Close() error {
	var err error
	sock.once.Do(func() {
		err = sock.ln.Close()
		// Remove the file only while it is still ours: one put there
		// since (by hand) stays.
		if cur, serr := os.Lstat(sock.opts.Path); serr == nil && os.SameFile(cur, sock.fi) {
			os.Remove(sock.opts.Path)
		}
	})
	return err
}

type server struct {
	opts  Options
	h     Handler
	log   *slog.Logger
	slots chan struct{}
	self  uint32

	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
	refused map[uint32]bool // uids already logged at warn
}

func (s *server) serve(ctx context.Context, ln *net.UnixListener) {
	stop := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-stop:
		}
		ln.Close()
		// Unblock connections still reading a request; handler contexts
		// end with ctx, and their answers (a context error) are still
		// written, bounded by the write deadline.
		s.mu.Lock()
		s.closing = true
		for c := range s.conns {
			c.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
	}()

	for {
		c, aerr := ln.AcceptUnix()
		if aerr != nil {
			if ctx.Err() != nil || errors.Is(aerr, net.ErrClosed) {
				break
			}
			// Out of file descriptors and the like: the daemon goes on,
			// the socket retries shortly.
			s.log.Warn("control socket accept failed", "event", "control-accept", "reason", aerr.Error())
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case s.slots <- struct{}{}:
		default:
			// Answered inline: a small write into a fresh socket's buffer
			// does not block, and the deadline covers the case that would.
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			writeResponse(c, Response{V: Version, Error: "busy: too many control connections, try again"})
			c.Close()
			continue
		}
		if !s.track(c) {
			<-s.slots
			c.Close()
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			defer s.untrack(c)
			s.handle(ctx, c)
		}()
	}
	close(stop)
	s.wg.Wait()
}

func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	// Set under the lock, so that shutdown's read deadline always comes
	// after it and is not overwritten.
	c.SetDeadline(time.Now().Add(s.opts.Deadline))
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// errTooLarge ends the read of a request over MaxRequest.
var errTooLarge = errors.New("request too large")

type limitReader struct {
	r io.Reader
	n int
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errTooLarge
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

func (s *server) handle(ctx context.Context, c *net.UnixConn) {
	start := time.Now()
	p, err := peerCred(c)
	if err != nil {
		s.log.Warn("control connection without peer credentials", "event", "control-refused", "reason", err.Error())
		writeResponse(c, Response{V: Version, Error: "permission denied"})
		return
	}
	if !allowed(p, s.opts.Group, s.self, "/proc") {
		s.logRefused(p)
		writeResponse(c, Response{V: Version, Error: "permission denied"})
		return
	}

	var req Request
	dec := json.NewDecoder(&limitReader{r: c, n: s.opts.MaxRequest})
	if err := dec.Decode(&req); err != nil {
		msg := "malformed request: " + err.Error()
		var ne net.Error
		switch {
		case errors.Is(err, errTooLarge):
			msg = fmt.Sprintf("request larger than %d bytes", s.opts.MaxRequest)
		case errors.As(err, &ne) && ne.Timeout():
			msg = fmt.Sprintf("request not complete within %s", s.opts.Deadline)
		case errors.Is(err, io.EOF):
			msg = "empty request"
		}
		s.log.Debug("control request rejected", "event", "control-request", "pid", p.pid, "uid", p.uid, "reason", msg)
		// The read deadline may have passed: give the answer its own.
		c.SetWriteDeadline(time.Now().Add(s.opts.Deadline))
		writeResponse(c, Response{V: Version, Error: msg})
		return
	}
	resp := s.dispatch(ctx, &req)
	c.SetWriteDeadline(time.Now().Add(s.opts.Deadline))
	if err := writeResponse(c, resp); err != nil {
		s.log.Debug("control response not delivered", "event", "control-request", "cmd", req.Cmd, "reason", err.Error())
	}
	s.log.Debug("control request", "event", "control-request", "cmd", req.Cmd, "uid", p.uid, "ok", resp.OK, "duration", time.Since(start))
}

func (s *server) dispatch(ctx context.Context, req *Request) Response {
	resp := Response{V: Version}
	if err := req.validate(); err != nil {
		resp.Error = err.Error()
		return resp
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.HandlerTimeout)
	defer cancel()
	var err error
	switch req.Cmd {
	case CmdStatus:
		var st Status
		st, err = s.h.Status(ctx)
		if err == nil {
			st.V = Version
			if st.Uplinks == nil {
				st.Uplinks = []Uplink{} // "uplinks": [] rather than null
			}
			resp.Status = &st
		}
	case CmdReconnect:
		err = s.h.Reconnect(ctx, req.Uplink)
	case CmdReload:
		resp.Problems, err = s.h.Reload(ctx)
		if err == nil && len(resp.Problems) > 0 {
			err = errors.New("config not reloaded: the file has problems; the running config stays")
		}
	case CmdEvent:
		err = s.h.Event(ctx, *req.Event)
	}
	if err != nil {
		resp.Error = err.Error()
		return resp
	}
	resp.OK = true
	return resp
}

// logRefused logs a refused peer at warn the first time its uid is seen and
// at debug after that, so a local user cannot flood the journal.
func (s *server) logRefused(p peer) {
	s.mu.Lock()
	first := !s.refused[p.uid]
	if first && len(s.refused) < 1024 {
		s.refused[p.uid] = true
	}
	s.mu.Unlock()
	lv := slog.LevelDebug
	if first {
		lv = slog.LevelWarn
	}
	s.log.Log(context.Background(), lv, "control connection refused", "event", "control-refused",
		"pid", p.pid, "uid", p.uid, "gid", p.gid, "reason", "permission denied: not root and not in the control group")
}

func writeResponse(w io.Writer, r Response) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}
