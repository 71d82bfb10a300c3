package control

import (
	"bytes"
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

	"golang.org/x/sys/unix"
)

// Defaults for Options.
const (
	DefaultPath           = "/run/uplinkd/uplinkd.sock"
	DefaultMaxRequest     = 64 << 10
	DefaultDeadline       = 2 * time.Second
	DefaultMaxConns       = 16
	DefaultHandlerTimeout = 10 * time.Second
	// DefaultRequestDeadline bounds the wait for the request itself: a
	// client (Call) writes it right after connecting, so an idle peer
	// holds its slot this long at most, not the whole Deadline.
	DefaultRequestDeadline = 500 * time.Millisecond
)

// BusyMessage is the error of the answer to a connection that finds no free
// slot; the answer also has Busy set. Clients may retry at once.
const BusyMessage = "busy: too many control connections, try again"

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
	// Deadline bounds writing the response (and reading the request when
	// it is shorter than RequestDeadline).
	Deadline time.Duration
	// RequestDeadline bounds reading the request, from accept on.
	RequestDeadline time.Duration
	// MaxConns bounds the connections served at once; more are answered
	// "busy" at once. A connection takes its slot only after its peer's
	// credentials were checked.
	MaxConns int
	// MaxConnsPerUID bounds the slots that one uid other than root (and
	// the daemon's own user) may hold at once; default MaxConns/4, at
	// least 1.
	MaxConnsPerUID int
	// RootReserve is how many of the MaxConns slots only root (and the
	// daemon's own user) may take, so that members of the control group
	// cannot starve root out; default MaxConns/4.
	RootReserve int
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
	if o.RequestDeadline <= 0 {
		o.RequestDeadline = min(DefaultRequestDeadline, o.Deadline)
	}
	if o.MaxConnsPerUID <= 0 {
		o.MaxConnsPerUID = max(1, o.MaxConns/4)
	}
	if o.RootReserve <= 0 {
		o.RootReserve = o.MaxConns / 4
	}
	o.RootReserve = min(o.RootReserve, o.MaxConns-1)
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
		opts:     sock.opts,
		h:        h,
		log:      sock.opts.Logger,
		perUID:   map[uint32]int{},
		refusers: make(chan struct{}, maxRefusers),
		conns:    map[net.Conn]struct{}{},
		refused:  map[uint32]bool{},
		self:     uint32(os.Geteuid()),
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
	opts Options
	h    Handler
	log  *slog.Logger
	self uint32

	wg       sync.WaitGroup
	mu       sync.Mutex
	used     int            // slots taken
	perUID   map[uint32]int // slots taken by each unprivileged uid
	refusers chan struct{}  // goroutines answering refused connections
	conns    map[net.Conn]struct{}
	closing  bool
	refused  map[uint32]bool // uids already logged at warn
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
		// Who is calling is known at accept, from the kernel: strangers
		// and peers over their share are answered here, before they can
		// take a slot, and never wait for a request.
		p, err := peerCred(c)
		if err != nil {
			s.log.Warn("control connection without peer credentials", "event", "control-refused", "reason", err.Error())
			s.refuse(c, Response{V: Version, Error: "permission denied"})
			continue
		}
		if !allowed(p, s.opts.Group, s.self, "/proc") {
			s.logRefused(p)
			s.refuse(c, Response{V: Version, Error: "permission denied"})
			continue
		}
		if !s.acquire(p.uid) {
			s.refuse(c, Response{V: Version, Error: BusyMessage, Busy: true})
			continue
		}
		if !s.track(c) {
			s.release(p.uid)
			c.Close()
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.release(p.uid)
			defer s.untrack(c)
			s.handle(ctx, c, p)
		}()
	}
	close(stop)
	s.wg.Wait()
}

// privileged: root and the daemon's own user, who own the socket anyway.
func (s *server) privileged(uid uint32) bool { return uid == 0 || uid == s.self }

// acquire takes a slot for a peer of uid, or reports that none is free for
// it: privileged peers may take any free slot, others only the ones
// outside RootReserve and at most MaxConnsPerUID each.
func (s *server) acquire(uid uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.privileged(uid) {
		if s.used >= s.opts.MaxConns {
			return false
		}
		s.used++
		return true
	}
	if s.used >= s.opts.MaxConns-s.opts.RootReserve || s.perUID[uid] >= s.opts.MaxConnsPerUID {
		return false
	}
	s.used++
	s.perUID[uid]++
	return true
}

func (s *server) release(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used--
	if !s.privileged(uid) {
		if s.perUID[uid]--; s.perUID[uid] <= 0 {
			delete(s.perUID, uid)
		}
	}
}

// maxRefusers bounds the goroutines that answer refused connections.
const maxRefusers = 256

// refuseWait bounds how long a refused connection's request is waited for:
// as long as a served peer gets to send its request, so that a client
// delayed by a busy scheduler still finds the answer instead of a reset.
const refuseWait = 500 * time.Millisecond

// refuse answers a connection that gets no slot and closes it. The answer
// is written at once; then the request the client sends is read and
// dropped (until its newline, EOF or refuseWait), because closing a unix
// stream socket with unread data makes the client's next read fail with
// ECONNRESET: a client that reads until EOF (nc -U, socat, a script) would
// see a reset instead of "busy". The wait runs on a goroutine of its own,
// at most maxRefusers of them; beyond that the request is drained without
// waiting, inline.
func (s *server) refuse(c *net.UnixConn, resp Response) {
	c.SetDeadline(time.Now().Add(refuseWait))
	writeResponse(c, resp)
	c.CloseWrite()
	select {
	case s.refusers <- struct{}{}:
	default:
		drain(c)
		c.Close()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.refusers }()
		defer c.Close()
		buf := make([]byte, 4096)
		for total := 0; total < s.opts.MaxRequest; {
			n, err := c.Read(buf)
			total += n
			if err != nil || bytes.IndexByte(buf[:n], '\n') >= 0 {
				return
			}
		}
	}()
}

// drain discards what the peer has sent so far, without blocking.
func drain(c *net.UnixConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var buf [4096]byte
	raw.Read(func(fd uintptr) bool {
		for range 16 { // 64 KiB at most: a request is never larger
			n, err := unix.Read(int(fd), buf[:])
			if n <= 0 || err != nil {
				break
			}
		}
		return true // never wait for more
	})
}

func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	// Set under the lock, so that shutdown's read deadline always comes
	// after it and is not overwritten.
	c.SetReadDeadline(time.Now().Add(s.opts.RequestDeadline))
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *server) handle(ctx context.Context, c *net.UnixConn, p peer) {
	start := time.Now()
	req, err := readRequest(c, s.opts.MaxRequest)
	if err != nil {
		msg := err.Error()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			msg = fmt.Sprintf("request not complete within %s", s.opts.RequestDeadline)
		}
		s.log.Debug("control request rejected", "event", "control-request", "pid", p.pid, "uid", p.uid, "reason", msg)
		// The read deadline may have passed: give the answer its own.
		c.SetWriteDeadline(time.Now().Add(s.opts.Deadline))
		writeResponse(c, Response{V: Version, Error: msg, Unread: true})
		return
	}
	resp := s.dispatch(ctx, &req, Caller{UID: p.uid, PID: p.pid})
	c.SetWriteDeadline(time.Now().Add(s.opts.Deadline))
	if err := writeResponse(c, resp); err != nil {
		s.log.Debug("control response not delivered", "event", "control-request", "cmd", req.Cmd, "reason", err.Error())
	}
	s.log.Debug("control request", "event", "control-request", "cmd", req.Cmd, "uid", p.uid, "ok", resp.OK, "duration", time.Since(start))
}

func (s *server) dispatch(ctx context.Context, req *Request, who Caller) Response {
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
	case CmdDrain, CmdUndrain:
		err = s.h.Drain(ctx, Drain{Uplink: req.Uplink, Undrain: req.Cmd == CmdUndrain, Force: req.Force, Caller: who})
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
