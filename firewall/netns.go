package firewall

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsRunner runs functions on one OS thread that has joined a network
// namespace. Commands started from that thread (iptables-restore, and the
// iptables commands go-iptables runs) inherit its namespace: Go forks from
// the calling thread, and the runtime starts new threads from a clean
// template thread rather than from a locked, modified one.
type nsRunner struct {
	work chan func()
	done chan struct{}
}

// newNSRunner returns nil (run in place) when netnsFd <= 0.
func newNSRunner(netnsFd int) (*nsRunner, error) {
	if netnsFd <= 0 {
		return nil, nil
	}
	r := &nsRunner{work: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is in another namespace and must exit
		// with this goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		defer close(r.done)
		if err := unix.Setns(netnsFd, unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("join network namespace: %w", err)
			return
		}
		ready <- nil
		for f := range r.work {
			f()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return r, nil
}

var errRunnerClosed = errors.New("namespace runner closed")

func (r *nsRunner) do(f func() error) (err error) {
	if r == nil {
		return f()
	}
	res := make(chan error, 1)
	defer func() {
		if recover() != nil { // send on closed channel
			err = errRunnerClosed
		}
	}()
	r.work <- func() { res <- f() }
	return <-res
}

func (r *nsRunner) close() {
	if r == nil {
		return
	}
	close(r.work)
	<-r.done
}
