package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// slowHandler answers every request after delay, so that parallel clients
// really overlap in the server.
type slowHandler struct {
	fakeHandler
	delay time.Duration
}

func (h *slowHandler) Status(ctx context.Context) (Status, error) {
	select {
	case <-time.After(h.delay):
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
	return sampleStatus(), nil
}

// outcome sorts a Call's result: "ok", "busy", or the error text.
func outcome(err error) string {
	var re *RemoteError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &re) && re.Busy:
		return "busy"
	}
	return err.Error()
}

// TestParallelClientsGetAnAnswer: 200 clients at once on the default 16
// slots each get either an answer or the documented busy reply, never a
// reset connection: neither Call nor a client that reads until EOF (nc -U,
// socat, a script), which on the old server got ECONNRESET after "busy"
// (the server closed with the client's request unread).
func TestParallelClientsGetAnAnswer(t *testing.T) {
	path, _ := serveT(t, Options{}, &slowHandler{delay: 20 * time.Millisecond})
	for round := range 3 {
		for name, client := range map[string]func() string{
			"Call":           func() string { return callOutcome(path) },
			"read until EOF": func() string { return readAllOutcome(path) },
		} {
			counts := parallel(200, client)
			t.Logf("round %d, %s: %v", round, name, counts)
			for k, n := range counts {
				if k != "ok" && k != "busy" {
					t.Errorf("round %d, %s: %d clients got %q, want only answers or busy", round, name, n, k)
				}
			}
			if counts["ok"] == 0 {
				t.Errorf("round %d, %s: no client was served: %v", round, name, counts)
			}
		}
	}
}

func callOutcome(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Call(ctx, path, Request{Cmd: CmdStatus})
	return outcome(err)
}

// readAllOutcome sends a status request and reads until EOF, as nc -U does.
func readAllOutcome(path string) string {
	c, err := net.Dial("unix", path)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// A refused peer is answered before its request is read, so a send
	// that fails (the server already closed: EPIPE) or a read that ends in
	// a reset after the answer still leaves the answer in the socket: what
	// counts is whether the client got one.
	_, werr := c.Write([]byte(`{"v":1,"cmd":"status"}` + "\n"))
	data, err := io.ReadAll(c)
	switch {
	case strings.Contains(string(data), `"busy":true`):
		return "busy"
	case strings.HasPrefix(string(data), `{"v":1,"ok":true`):
		return "ok"
	case werr != nil:
		return "write: " + werr.Error()
	case err != nil:
		return "read: " + err.Error()
	}
	return "answer: " + string(data)
}

// parallel runs client n times at once and counts the outcomes.
func parallel(n int, client func() string) map[string]int {
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
		start  = make(chan struct{})
	)
	for range n {
		wg.Go(func() {
			<-start
			res := client()
			mu.Lock()
			counts[res]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return counts
}

// hostileEnv makes the test binary a hostile local peer (run as another
// user): it keeps N idle connections open on the socket, opening a new one
// whenever the server closes one, prints "ready" once N are open, and stops
// when its stdin closes. Value: N:PATH.
const hostileEnv = "UPLINKD_CONTROL_TEST_HOSTILE"

func hostileMain(arg string) int {
	nText, path, _ := strings.Cut(arg, ":")
	var n int
	fmt.Sscan(nText, &n)
	var (
		opened  atomic.Int64
		stop    = make(chan struct{})
		readyMu sync.Once
		wg      sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("unix", path)
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				if opened.Add(1) == int64(n) {
					readyMu.Do(func() { fmt.Println("ready") })
				}
				// Idle: never send a request; wait for the server to
				// give up on us, then come back at once.
				done := make(chan struct{})
				go func() {
					io.Copy(io.Discard, c)
					close(done)
				}()
				select {
				case <-done:
				case <-stop:
				}
				c.Close()
			}
		})
	}
	io.Copy(io.Discard, os.Stdin)
	close(stop)
	wg.Wait()
	fmt.Println("connections", opened.Load())
	return 0
}

// hostilePeers starts the hostile peer as nobody (a member of the socket's
// group) with n connections, and returns once they are open.
func hostilePeers(t testing.TB, bin, path string, group uint32, n int) {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%s", hostileEnv, n, path))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: group}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("hostile peer: %q, %v", line, err)
	}
}

// nobodyBinary copies the test binary where nobody may run it.
func nobodyBinary(t testing.TB) (dir, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer as another user")
	}
	dir, err := os.MkdirTemp("", "uplinkd-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "client")
	copyFile(t, os.Args[0], bin, 0o755)
	return dir, bin
}

// TestHostileGroupMemberCannotStarveRoot: a member of the control group
// keeps 16 idle connections open (reopening each one the server drops);
// root's status is still answered, every time, and the hostile user holds
// at most its share of slots.
func TestHostileGroupMemberCannotStarveRoot(t *testing.T) {
	dir, bin := nobodyBinary(t)
	const group = 4243
	path, _ := serveT(t, Options{Path: filepath.Join(dir, "c.sock"), Group: group}, &fakeHandler{})
	hostilePeers(t, bin, path, group, 16)
	lat := statusLatencies(t, path, 200)
	t.Logf("root status with 16 hostile idle connections: p50 %v p99 %v max %v", lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
}

// statusLatencies asks for the status n times in a row; each must succeed.
func statusLatencies(t testing.TB, path string, n int) []time.Duration {
	t.Helper()
	lat := make([]time.Duration, 0, n)
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t0 := time.Now()
		_, err := Call(ctx, path, Request{Cmd: CmdStatus})
		cancel()
		if err != nil {
			t.Fatalf("status %d as root next to hostile peers: %v", i, err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return lat
}

// BenchmarkStatusUnderHostilePeers: root's status latency while a group
// member holds 16 idle connections (TestHostileGroupMemberCannotStarveRoot).
func BenchmarkStatusUnderHostilePeers(b *testing.B) {
	dir, bin := nobodyBinary(b)
	const group = 4243
	path, _ := serveT(b, Options{Path: filepath.Join(dir, "c.sock"), Group: group}, &fakeHandler{})
	hostilePeers(b, bin, path, group, 16)
	b.ResetTimer()
	lat := statusLatencies(b, path, max(b.N, 100))
	b.StopTimer()
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
