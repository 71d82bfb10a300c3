package dhcpd

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNetNS runs fn on an OS thread inside the network namespace nsfd (<= 0:
// fn runs directly). Only socket creation needs it: a socket stays in the
// namespace it was created in and can be used from any goroutine after.
// openSockets is its only caller. (The same pattern lives in firewall/,
// watcher/probe and internal/lab; it is meant to move to one shared helper.)
//
// If the thread cannot return to its namespace it stays locked, so the Go
// runtime destroys it instead of reusing it for unrelated goroutines.
func inNetNS(nsfd int, fn func() error) error {
	if nsfd <= 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace fd %d: %w", nsfd, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from network namespace fd %d: %w", nsfd, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
