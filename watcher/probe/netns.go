package probe

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// inNetNS runs fn with the calling thread inside the network namespace nsfd
// (0: the current one, fn runs directly). Only the creation of sockets needs
// this: a socket belongs to the namespace it was created in for its whole
// life, so it can be used from any goroutine afterwards.
//
// fn runs on a fresh goroutine locked to its OS thread, because setns(2)
// changes the namespace of one thread only and the Go scheduler would
// otherwise move fn (or run unrelated goroutines on the switched thread). If
// the thread cannot be switched back it stays locked when its goroutine
// exits, which makes the runtime destroy it instead of reusing it.
func inNetNS(nsfd int, fn func() error) error {
	if nsfd == 0 {
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
			// Thread stays locked on purpose: see above.
			errc <- errors.Join(ferr, fmt.Errorf("return from network namespace fd %d: %w", nsfd, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
