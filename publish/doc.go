// Package publish tells the world an uplink's new address
// ([[uplink.publish]]): a dynamic DNS provider over dyndns2 (HTTPS), a DNS
// server over an RFC 2136 UPDATE signed with TSIG, or any command.
//
// A Publisher does one publish and says what it came to (Outcome: ok,
// retry, permanent). The Manager decides when: an address must be stable
// for Settle before it is published, attempts are at least MinInterval
// apart, failures are retried after Backoff doubling to MaxBackoff
// (jittered by hooks.JitterFraction, like reconnects), and an unchanged
// address is published again after Refresh. It remembers what was
// published in a state file per publisher (state.go), so a restart
// publishes nothing when nothing changed, and an attempt a crash
// interrupted is sent again. The daemon's loop tells it the addresses
// (Manager.Update, UpdateIPv6) and never waits for it: publishes run on
// goroutines the Manager owns and waits for in Close.
//
// Secrets (the dyndns2 password, the TSIG key) are read from files whose
// mode is checked (secretfile.go), when the publisher is created and again
// for each attempt; they never appear in logs, the status or errors, and
// a Spec holds only their paths, so it can be logged and compared freely.
//
// The command publisher runs its argv through package hooks' RunCommand:
// one process runner with one set of rules (no shell, own process group,
// timeout, Pdeathsig, output logged line by line) for every program
// uplinkd starts. The scheduling clock is hooks' Clock, so tests drive
// settle, backoff and refresh with hooks.FakeClock.
package publish
