// Package hooks acts outward: it runs the commands that bring a downed uplink
// back (reconnect, with exponential backoff) and the user's hook commands on
// uplink events.
//
// Everything here runs external programs, so the rules are the same for both
// kinds and live in one place (runCommand):
//
//   - argv is executed directly, never through a shell, so that addresses,
//     interface names and configured arguments can never be interpreted as
//     shell syntax;
//   - each command runs in its own process group (reconnect commands in their
//     own session, so the pppd they start is not the daemon's) with a
//     timeout, and on timeout the whole group is killed: reconnect scripts
//     like `pon` and user hooks routinely fork helpers, and killing only the
//     direct child would leak them;
//   - stdout and stderr go into the structured log line by line (bounded, so a
//     chatty command cannot flood the journal);
//   - context is passed in UPLINKD_* environment variables.
//
// Nothing here decides when an uplink is down; the daemon's state machine does
// and tells a [Reconnector] what it needs through [Reconnector.Set]. What the
// Reconnector decides by itself is whether a pppd already owns the line. Scheduling uses an
// injectable [Clock] so that backoff can be tested without waiting; process
// timeouts use real time because they bound real processes.
package hooks
