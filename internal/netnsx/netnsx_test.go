package netnsx_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/internal/netnsx"
)

func TestMain(m *testing.M) { os.Exit(lab.GuardMain(m)) }

// The main goroutine keeps the main thread, as uplinkd's main does: the Go
// runtime parks the main thread for ever instead of ending it when a
// goroutine locked to it exits, so a Do whose goroutine landed there and
// failed to switch back left a thread in the lab namespace for good
// (TestDoFailedSwitchBackDiscardsThread failed so in a stress-test run).
func init() { runtime.LockOSThread() }

// linkNames lists the links the calling thread's namespace has, through a
// netlink socket created on that thread.
func linkNames() (map[string]bool, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, l := range links {
		out[l.Attrs().Name] = true
	}
	return out, nil
}

func sameNS(a, b netns.NsHandle) bool { return a.Equal(b) }

func TestDo(t *testing.T) {
	l := lab.NewT(t, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: lab.KindPPP}}})
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	own, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()

	tests := []struct {
		name      string
		ns        netns.NsHandle
		wantLinks []string // links fn must see
		wantNS    netns.NsHandle
	}{
		{"lab namespace", ns, []string{"lo", lab.LANIface, "ppp0"}, ns},
		{"own namespace (Own)", netnsx.Own, []string{"lo"}, own},
		{"own namespace (any negative handle)", -7, []string{"lo"}, own},
		{"own namespace (zero, an options struct's zero value)", 0, []string{"lo"}, own},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Many rounds on few threads: a thread returned to the scheduler
			// in the lab namespace would show up in a later check.
			for range 50 {
				var inside netns.NsHandle
				err := netnsx.Do(tt.ns, func() error {
					links, err := linkNames()
					if err != nil {
						return err
					}
					for _, want := range tt.wantLinks {
						if !links[want] {
							return fmt.Errorf("link %s not seen (have %v)", want, links)
						}
					}
					inside, err = netns.Get()
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				if !sameNS(inside, tt.wantNS) {
					t.Fatalf("fn ran in %v, want %v", inside, tt.wantNS)
				}
				inside.Close()
				assertAllThreadsIn(t, own)
			}
		})
	}
}

// assertAllThreadsIn checks that every thread of this process except ones
// locked by a running Do is in ns: nothing leaked a switched thread.
func assertAllThreadsIn(t *testing.T, want netns.NsHandle) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(want), &st); err != nil {
		t.Fatal(err)
	}
	wantLink := fmt.Sprintf("net:[%d]", st.Ino)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // thread exited meanwhile
		}
		if got != wantLink {
			t.Fatalf("thread %s is in %s, want %s", task.Name(), got, wantLink)
		}
	}
}

func TestDoReturnsFnError(t *testing.T) {
	want := errors.New("boom")
	if err := netnsx.Do(netnsx.Own, func() error { return want }); err != want {
		t.Fatalf("Do(Own) = %v, want fn's error", err)
	}
	l := lab.NewT(t, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: lab.KindPPP}}})
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netnsx.Do(ns, func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("Do(lab) = %v, want fn's error", err)
	}
}

func TestDoBadHandle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (setns)")
	}
	// An fd that is not a namespace: setns fails, fn never runs, and the
	// thread (never switched) goes back to the scheduler.
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ran := false
	err = netnsx.Do(netns.NsHandle(f.Fd()), func() error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("Do(/dev/null) = %v, ran %v; want an error and fn not run", err, ran)
	}
}

// TestDoFailedSwitchBackDiscardsThread: setns back to a namespace the thread
// came from does not fail with real handles (the original is held open), so
// the failure is injected: the switch into the lab is real, the switch back
// reports an error without switching. The thread is then really inside the
// lab namespace, and Do must leave it locked so that it exits with its
// goroutine instead of running other goroutines there.
func TestDoFailedSwitchBackDiscardsThread(t *testing.T) {
	l := lab.NewT(t, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: lab.KindPPP}}})
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	own, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()

	var calls atomic.Int32
	restore := netnsx.SetSwitch(func(h netns.NsHandle) error {
		if calls.Add(1) == 2 {
			return errors.New("injected: cannot switch back")
		}
		return netns.Set(h)
	})
	defer restore()

	var tid int
	err = netnsx.Do(ns, func() error { tid = unix.Gettid(); return nil })
	if err == nil {
		t.Fatal("Do succeeded although the switch back failed")
	}
	t.Logf("Do: %v", err)
	// The thread left in the lab namespace must go away: the runtime exits
	// a thread whose goroutine ends while locked.
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	// Generous: under CPU hogs and the race detector the runtime may take
	// seconds to get to the exiting thread; the check is that it goes.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d (left in the lab namespace) still exists", tid)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	assertAllThreadsIn(t, own)
}
