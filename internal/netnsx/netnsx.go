// Package netnsx runs code inside another network namespace without ever
// letting a switched thread go back to the Go scheduler.
//
// setns(2) changes the namespace of the calling OS thread only. Go moves
// goroutines between threads and runs unrelated goroutines on any of them, so
// a namespace switch is only safe on a thread locked to its goroutine, and
// only for as long as the lock lasts. Do is the one place in uplinkd that
// switches: it locks, switches, runs the function, switches back and unlocks.
// If switching back fails the thread stays locked: a goroutine that exits
// while locked takes its thread with it, so no other goroutine ever runs in
// the wrong namespace.
//
// What needs a switch: creating sockets (a socket belongs to the namespace
// it was created in for its whole life, and can then be used from any
// goroutine), opening /proc/sys/net files (they resolve against the opening
// thread's namespace and stay bound to it), and starting commands (a child
// forked from the thread inherits its namespace).
//
// The convention for "the caller's own namespace", used everywhere in
// uplinkd: any handle or fd <= 0. Own (-1, netns.None's value) is the name
// to write; 0 means the same so that the zero value of an options struct
// (watcher.Options, probe.Spec, dhcpd.Spec, backendcheck.Options...) runs
// in place, and because fd 0 is stdin, never a namespace. Test for it with
// IsOwn; hand a namespace to an API that takes an int fd with 0 meaning
// "own" (mdlayher/netlink's Config.NetNS) through FD.
package netnsx

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Own is the handle that means "the caller's own namespace": Do runs fn
// directly. Every handle <= 0 means the same (see the package doc).
const Own netns.NsHandle = -1

// IsOwn reports whether ns means the caller's own namespace (ns <= 0).
func IsOwn[T ~int](ns T) bool { return ns <= 0 }

// FD is ns as an int fd for APIs whose zero means "own namespace"
// (mdlayher/netlink's Config.NetNS, the NetNS fields of uplinkd's option
// structs): 0 for the caller's own, the fd otherwise.
func FD[T ~int](ns T) int {
	if IsOwn(ns) {
		return 0
	}
	return int(ns)
}

// Do runs fn on an OS thread inside the network namespace ns and returns
// fn's error. ns <= 0 (Own) runs fn in place, on the caller's goroutine.
// It takes an int fd as well (T ~int), so callers holding one convert
// nothing.
//
// fn runs on a fresh goroutine locked to its thread; it must not start
// goroutines that expect to run inside ns. Errors of the switch itself are
// wrapped; if the switch back fails, the error says so and the thread is
// destroyed when fn's goroutine ends. The runtime never ends the main
// thread, it parks it for ever: that thread then stays in ns, and
// /proc/<pid>/ns/net shows ns. A program that must rule this out locks the
// main thread to the main goroutine in an init function (the package's
// tests do). uplinkd's main does not: its loop runs on the main goroutine,
// and a locked goroutine is woken through a thread hand-off on every
// event, for a switch back that fails only with a broken namespace fd.
func Do[T ~int](ns T, fn func() error) error {
	if IsOwn(ns) {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- doLocked(netns.NsHandle(ns), fn, switchTo)
	}()
	return <-errc
}

// switchTo is netns.Set; tests replace it to provoke a failed switch back.
var switchTo = netns.Set

// doLocked runs on a locked thread. It unlocks the thread only when the
// thread is back in its original namespace (or never left it).
func doLocked(ns netns.NsHandle, fn func() error, set func(netns.NsHandle) error) error {
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: get own namespace: %w", err)
	}
	defer orig.Close()
	if err := set(ns); err != nil {
		// setns failed: the thread is still where it was.
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter namespace %s: %w", ns, err)
	}
	ferr := fn()
	if err := set(orig); err != nil {
		// Deliberately still locked: the thread dies with this goroutine.
		return errors.Join(ferr, fmt.Errorf("netns: return from namespace %s (thread discarded): %w", ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}
