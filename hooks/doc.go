// Package hooks acts outward: it runs the commands that bring a downed uplink
// back (reconnect, with exponential backoff) and the user's hooks on uplink
// events ([[uplink.hook]] and the hook directory). The publishers that tell
// the world an uplink's new address ([[uplink.publish]]) are package
// publish; they start their commands through RunCommand and schedule with
// this package's Clock.
//
// Everything here runs external programs, so the rules are the same for all
// of them and live in one place (runCommand; RunCommand for package
// publish):
//
//   - argv is executed directly, never through a shell, so that addresses,
//     interface names and configured arguments can never be interpreted as
//     shell syntax;
//   - each command runs in its own process group (reconnect commands in their
//     own session, so the pppd they start is not the daemon's) with a
//     timeout, and on timeout the whole group is killed: reconnect scripts
//     like `pon` and user hooks routinely fork helpers, and killing only the
//     direct child would leak them;
//   - each command gets Pdeathsig=SIGKILL, so it dies with the daemon even
//     when the daemon is killed with SIGKILL (starter.go explains why one
//     locked thread forks them all); a pppd that detached is not its child
//     and lives on;
//   - stdout and stderr go into the structured log line by line (bounded, so a
//     chatty command cannot flood the journal);
//   - context is passed in UPLINKD_* environment variables.
//
// Nothing here decides when an uplink is down or what its address is; the
// daemon's loop does and tells a [Reconnector] what it needs
// ([Reconnector.Set]) and the [Runner] (Fire). What the Reconnector decides
// by itself is whether a pppd already owns the line, and when the dial
// window of an attempt ends (the pppd it started or found exits: it watches
// /proc while a window is open). None of these calls blocks: the work
// happens on goroutines owned by those objects, each waited for by Close.
// Scheduling uses an injectable [Clock] (package publish's too) so that
// backoff, settle and refresh can be tested without waiting; process
// timeouts use real time because they bound real processes.
package hooks
