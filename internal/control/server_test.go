package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// call is Call with a generous timeout: these tests check answers, not speed.
func call(t *testing.T, path string, req Request) (Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Call(ctx, path, req)
}

func TestCommands(t *testing.T) {
	h := &fakeHandler{}
	path, _ := serveT(t, Options{}, h)

	resp, err := call(t, path, Request{Cmd: CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	want := sampleStatus()
	want.V = Version
	if resp.Status == nil || !reflect.DeepEqual(*resp.Status, want) {
		t.Errorf("status = %+v, want %+v", resp.Status, want)
	}

	ev := Event{Iface: "ppp0", State: LinkUp, Local: mustAddr("203.0.113.9"), Remote: mustAddr("198.51.100.1")}
	if _, err := call(t, path, Request{Cmd: CmdEvent, Event: &ev}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	got := h.events
	h.mu.Unlock()
	if len(got) != 1 || got[0] != ev {
		t.Errorf("handler saw events %+v, want [%+v]", got, ev)
	}

	for _, tc := range []struct {
		name string
		req  Request
		want string
	}{
		{"handler error", Request{Cmd: CmdReconnect, Uplink: "nope"}, `no uplink named "nope"`},
		{"no uplink", Request{Cmd: CmdReconnect}, "no uplink named"},
		{"unknown command", Request{Cmd: "reboot"}, `unknown command "reboot"`},
		{"no command", Request{}, "no command"},
		{"event without event", Request{Cmd: CmdEvent}, "no event"},
		{"bad state", Request{Cmd: CmdEvent, Event: &Event{Iface: "ppp0", State: "sideways"}}, `state "sideways"`},
		{"role not supported by this daemon", Request{Cmd: CmdEvent, Event: &Event{Role: RoleMaster}}, "not supported yet"},
		{"bad role", Request{Cmd: CmdEvent, Event: &Event{Role: "boss"}}, `role "boss"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(t, path, tc.req)
			var re *RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, tc.want) {
				t.Errorf("err = %v, want a daemon error containing %q", err, tc.want)
			}
		})
	}
	if _, err := call(t, path, Request{Cmd: CmdReconnect, Uplink: "ppp0"}); err != nil {
		t.Errorf("reconnect ppp0: %v", err)
	}
}

// TestDrainDispatch: drain and undrain reach the Handler with the uplink,
// the force flag and the caller the kernel names (this process: the test
// dials its own socket), and a refusal comes back as the daemon's error.
func TestDrainDispatch(t *testing.T) {
	h := &fakeHandler{}
	path, _ := serveT(t, Options{}, h)
	me := Caller{UID: uint32(os.Getuid()), PID: int32(os.Getpid())}
	for _, tc := range []struct {
		name string
		req  Request
		want *Drain // nil: refused
		err  string
	}{
		{"drain", Request{Cmd: CmdDrain, Uplink: "wlan"}, &Drain{Uplink: "wlan", Caller: me}, ""},
		{"undrain", Request{Cmd: CmdUndrain, Uplink: "wlan"}, &Drain{Uplink: "wlan", Undrain: true, Caller: me}, ""},
		{"refused without force", Request{Cmd: CmdDrain, Uplink: "ppp0"}, nil, "last uplink that carries the default route"},
		{"forced", Request{Cmd: CmdDrain, Uplink: "ppp0", Force: true}, &Drain{Uplink: "ppp0", Force: true, Caller: me}, ""},
		{"unknown uplink", Request{Cmd: CmdUndrain, Uplink: "nope"}, nil, `no uplink named "nope"`},
		{"no uplink", Request{Cmd: CmdDrain}, nil, "drain: no uplink named"},
		{"undrain no uplink", Request{Cmd: CmdUndrain, Force: true}, nil, "undrain: no uplink named"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.mu.Lock()
			h.drains = nil
			h.mu.Unlock()
			_, err := call(t, path, tc.req)
			h.mu.Lock()
			got := h.drains
			h.mu.Unlock()
			if tc.want == nil {
				var re *RemoteError
				if !errors.As(err, &re) || !strings.Contains(re.Msg, tc.err) {
					t.Errorf("err = %v, want a daemon error containing %q", err, tc.err)
				}
				if len(got) != 0 {
					t.Errorf("handler took %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != *tc.want {
				t.Errorf("handler saw %+v, want [%+v]", got, *tc.want)
			}
		})
	}
}

func TestReloadProblems(t *testing.T) {
	h := &fakeHandler{problems: []string{"/etc/uplinkd/uplinkd.toml:3:1: unknown key \"Table\""}}
	path, _ := serveT(t, Options{}, h)
	resp, err := call(t, path, Request{Cmd: CmdReload})
	var re *RemoteError
	if !errors.As(err, &re) || !reflect.DeepEqual(re.Problems, h.problems) || !reflect.DeepEqual(resp.Problems, h.problems) {
		t.Fatalf("err = %v, resp = %+v; want the problems back", err, resp)
	}

	h2 := &fakeHandler{}
	path2, _ := serveT(t, Options{}, h2)
	if _, err := call(t, path2, Request{Cmd: CmdReload}); err != nil {
		t.Errorf("good reload: %v", err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// rawExchange sends data on a fresh connection and returns the daemon's
// answer; the write happens in the background because a large one blocks
// until the daemon closes.
func rawExchange(t *testing.T, path string, data []byte) (Response, error) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.Write(data) // may fail with EPIPE once the daemon has given up
	}()
	defer wg.Wait()
	var resp Response
	err = json.NewDecoder(c).Decode(&resp)
	c.Close()
	return resp, err
}

// TestAbusiveClients: garbage, an oversized request and a client that stalls
// mid-request each get an error answer, and none of them keeps a concurrent
// status request from being answered.
func TestAbusiveClients(t *testing.T) {
	const deadline = 3 * time.Second
	path, _ := serveT(t, Options{Deadline: deadline, RequestDeadline: deadline}, &fakeHandler{})

	// The slow client goes first and holds its connection open.
	slow, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte(`{"v":1,"cmd":"sta`)); err != nil {
		t.Fatal(err)
	}
	slowAnswer := make(chan Response, 1)
	go func() {
		slow.SetReadDeadline(time.Now().Add(30 * time.Second))
		var r Response
		json.NewDecoder(slow).Decode(&r)
		slowAnswer <- r
	}()

	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), "malformed request"},
		{"binary", []byte{0, 1, 2, 0xff, '\n'}, "malformed request"},
		{"wrong types", []byte(`{"v":"one","cmd":7}`), "malformed request"},
		{"wrong version", []byte(`{"v":2,"cmd":"status"}`), "protocol version 2"},
		{"1 MB", append(append([]byte(`{"v":1,"cmd":"status","uplink":"`), bytes.Repeat([]byte("x"), 1<<20)...), `"}`...), "request larger than 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rawExchange(t, path, tc.data)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.OK || !strings.Contains(resp.Error, tc.want) {
				t.Errorf("answer %+v, want an error containing %q", resp, tc.want)
			}
			if tc.name != "wrong version" && !resp.Unread {
				t.Errorf("answer %+v to a request the daemon could not read is not marked unread", resp)
			}
		})
	}

	// Status is answered while the slow client still holds its connection.
	resp, err := call(t, path, Request{Cmd: CmdStatus})
	if err != nil || resp.Status == nil {
		t.Fatalf("status next to abusive clients: %v", err)
	}
	select {
	case r := <-slowAnswer:
		t.Fatalf("the slow client was answered (%+v) before the concurrent status: connections are not independent", r)
	default:
	}
	r := <-slowAnswer
	if r.OK || !strings.Contains(r.Error, "not complete within 3s") || !r.Unread {
		t.Errorf("slow client got %+v, want a timeout error marked unread", r)
	}
}

// TestBusy: connections beyond MaxConns are answered "busy" at once while the
// others are being served.
func TestBusy(t *testing.T) {
	h := &fakeHandler{block: make(chan struct{}), entered: make(chan struct{})}
	path, _ := serveT(t, Options{MaxConns: 2}, h)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := call(t, path, Request{Cmd: CmdStatus})
			errs <- err
		}()
	}
	// Both status requests must be inside the handler before the third
	// connection; a request that returned instead says why.
	for range 2 {
		select {
		case <-h.entered:
		case err := <-errs:
			close(h.block)
			t.Fatalf("a status request returned before entering the handler: %v", err)
		case <-time.After(15 * time.Second):
			close(h.block)
			t.Fatal("the status requests did not reach the handler within 15s")
		}
	}
	_, err := call(t, path, Request{Cmd: CmdReconnect, Uplink: "ppp0"})
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "busy") {
		t.Errorf("third connection: %v, want busy", err)
	}
	close(h.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("blocked status: %v", err)
		}
	}
	// The blocked requests were answered, but their slots are freed only
	// after the answer is written: "busy" may still come for a moment, as
	// the message says ("try again"). Any other answer is final.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := call(t, path, Request{Cmd: CmdReconnect, Uplink: "ppp0"})
		var re *RemoteError
		if errors.As(err, &re) && re.Busy && time.Now().Before(deadline) {
			continue
		}
		if err != nil {
			t.Errorf("after the others finished: %v", err)
		}
		break
	}
}

// TestShutdown: Serve returns while a handler is busy and a client stalls,
// and removes its socket (goleak in TestMain checks the goroutines).
func TestShutdown(t *testing.T) {
	h := &fakeHandler{block: make(chan struct{}), entered: make(chan struct{})}
	path, stop := serveT(t, Options{Deadline: time.Hour}, h)
	stalled, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.Write([]byte(`{"v":1`))
	errc := make(chan error, 1)
	go func() {
		_, err := call(t, path, Request{Cmd: CmdStatus})
		errc <- err
	}()
	<-h.entered
	stop()
	var re *RemoteError
	if err := <-errc; !errors.As(err, &re) || !strings.Contains(re.Msg, "context canceled") {
		t.Errorf("status during shutdown: %v, want the handler's context error", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestSocketSetup(t *testing.T) {
	t.Run("creates the directory, mode 0600", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "run", "uplinkd", "uplinkd.sock")
		serveT(t, Options{Path: path}, &fakeHandler{})
		checkMode(t, filepath.Dir(path), os.ModeDir|0o755, -1)
		checkMode(t, path, os.ModeSocket|0o600, -1)
	})
	t.Run("group, mode 0660", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("giving the socket to another group needs root (the daemon runs as root)")
		}
		path := filepath.Join(t.TempDir(), "uplinkd.sock")
		serveT(t, Options{Path: path, Group: 4242}, &fakeHandler{})
		checkMode(t, path, os.ModeSocket|0o660, 4242)
	})
	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "uplinkd.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // as a daemon killed with SIGKILL leaves it
		serveT(t, Options{Path: path}, &fakeHandler{})
		if _, err := call(t, path, Request{Cmd: CmdStatus}); err != nil {
			t.Error(err)
		}
	})
	t.Run("live daemon kept", func(t *testing.T) {
		path, _ := serveT(t, Options{}, &fakeHandler{})
		err := Serve(context.Background(), Options{Path: path, Group: -1}, &fakeHandler{})
		if err == nil || !strings.Contains(err.Error(), "another uplinkd answers") {
			t.Errorf("second Serve: %v", err)
		}
		if _, err := call(t, path, Request{Cmd: CmdStatus}); err != nil {
			t.Errorf("first daemon no longer answers: %v", err)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "uplinkd.sock")
		os.WriteFile(path, []byte("keep me"), 0o600)
		err := Serve(context.Background(), Options{Path: path, Group: -1}, &fakeHandler{})
		if err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Serve: %v", err)
		}
		if data, _ := os.ReadFile(path); string(data) != "keep me" {
			t.Error("the file was touched")
		}
	})
}

func checkMode(t *testing.T, path string, mode os.FileMode, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	if gid >= 0 {
		if got := fi.Sys().(*syscall.Stat_t).Gid; got != uint32(gid) {
			t.Errorf("%s: gid %d, want %d", path, got, gid)
		}
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPeerCredentials runs a real client process as another user. The
// socket's file mode is the first barrier; with it loosened by hand, the
// peer credential check still refuses strangers and admits the group.
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	// The client runs as nobody: it needs a traversable directory and a
	// binary it may execute (go test's own build directory is 0700).
	dir, err := os.MkdirTemp("", "uplinkd-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	copyFile(t, os.Args[0], bin, 0o755)

	const group = 4242
	const nobody = 65534
	runAs := func(path string, gid uint32, groups ...uint32) string {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), clientEnv+"="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: gid, Groups: groups}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// Root only.
	rootOnly, _ := serveT(t, Options{Path: filepath.Join(dir, "root.sock"), Logger: log}, &fakeHandler{})
	if got := runAs(rootOnly, nobody); !strings.HasPrefix(got, "transport:") || !strings.Contains(got, "permission denied") {
		t.Errorf("nobody on a 0600 socket: %q, want the connect refused by the file mode", got)
	}
	if err := os.Chmod(rootOnly, 0o666); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := runAs(rootOnly, nobody, group); got != "remote: permission denied" {
			t.Errorf("nobody on a 0666 root-only socket: %q, want remote: permission denied", got)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"control connection refused\""); n != 1 {
		t.Errorf("refused twice, %d warn records; want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "uid=65534") {
		t.Errorf("refusal log does not name the uid:\n%s", logs.String())
	}

	// With a group.
	shared, _ := serveT(t, Options{Path: filepath.Join(dir, "group.sock"), Group: group, Logger: log}, &fakeHandler{})
	for _, tc := range []struct {
		name   string
		gid    uint32
		groups []uint32
		want   string
	}{
		{"primary group", group, nil, "ok"},
		{"supplementary group", nobody, []uint32{100, group}, "ok"},
		{"not a member", nobody, []uint32{100}, "transport:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runAs(shared, tc.gid, tc.groups...); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if err := os.Chmod(shared, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := runAs(shared, nobody, 100); got != "remote: permission denied" {
		t.Errorf("non-member on a 0666 group socket: %q", got)
	}
}

func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestListenBeforeServe: the daemon sets the socket up before its first
// pass; a second daemon is refused then, a client that connects early is
// answered once Serve runs, and Close without Serve removes the socket.
func TestListenBeforeServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "uplinkd.sock")
	sock, err := Listen(Options{Path: path, Group: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(Options{Path: path, Group: -1}); err == nil || !strings.Contains(err.Error(), "another uplinkd answers") {
		t.Errorf("second Listen: %v", err)
	}
	early, err := net.Dial("unix", path) // in the backlog until Serve runs
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if _, err := early.Write([]byte(`{"v":1,"cmd":"status"}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sock.Serve(ctx, &fakeHandler{}) }()
	var resp Response
	early.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewDecoder(early).Decode(&resp); err != nil || !resp.OK {
		t.Errorf("client that connected before Serve: %+v, %v", resp, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}

	sock, err = Listen(Options{Path: path, Group: -1})
	if err != nil {
		t.Fatalf("Listen after Serve ended: %v", err)
	}
	if err := sock.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("Close left the socket: %v", err)
	}
}
