// Package earlysig catches SIGHUP from the moment the process's Go code
// starts, long before the daemon's loop takes SIGHUP as "reload".
//
// A Go program dies of a SIGHUP that arrives before anything asked for it
// (the runtime's default), and `uplinkd run` spends its first tens of
// milliseconds loading the config, opening netlink and the firewall. A
// SIGHUP then (logrotate, an admin's kill -HUP, a reload racing a restart)
// killed the daemon with status 129 and nothing logged. Importing this
// package registers for SIGHUP in its init: it depends only on os/signal,
// so Go initialises it right after os/signal, before the heavier packages
// (crypto, net, netlink, the config loader). What remains is the Go
// runtime's own start (well under a millisecond), which no Go code can
// cover.
//
// The SIGHUPs caught are kept (Pending); the daemon turns them into one
// reload once its loop runs (cmd/uplinkd), and the short-lived commands
// ignore them.
package earlysig

import (
	"os"
	"os/signal"
	"syscall"
)

var hup = make(chan os.Signal, 1)

func init() { signal.Notify(hup, syscall.SIGHUP) }

// Pending reports whether a SIGHUP arrived since the last call (several
// count as one).
func Pending() bool {
	select {
	case <-hup:
		return true
	default:
		return false
	}
}

// Stop ends the early catch. Call it only once another signal.Notify for
// SIGHUP is in place (the daemon's loop), or a SIGHUP is fatal again.
func Stop() { signal.Stop(hup) }
