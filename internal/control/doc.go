// Package control is uplinkd's control socket: the server the daemon runs
// (Serve), the client the command line uses (Call), the JSON protocol
// between them and the status schema with its text rendering.
//
// The socket is a unix stream socket, root-only (0600) or shared with one
// group (0660). Each connection carries one JSON request and one JSON
// response, so a client that misbehaves can only waste its own connection:
// requests are size-limited and must arrive within a short deadline,
// connections are served on their own goroutines (a bounded number of
// slots), and the daemon's Handler is called from those goroutines, never
// from the daemon's loop. The peer's credentials are checked at accept, as
// well as the file mode, before a connection takes a slot, so a socket whose
// mode was loosened by hand still refuses strangers; a uid other than root
// holds a bounded share of the slots and some are kept for root, so a
// member of the control group cannot lock root out. A connection without a
// slot gets the busy answer (Response.Busy), and every refused connection
// gets its answer rather than a reset.
//
// The protocol and the status schema are versioned (v 1). Within v 1 fields
// and sections are only added, always optional; clients ignore what they do
// not know. docs/status.md documents the schema.
package control
