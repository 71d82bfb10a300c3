package control

import "context"

// Handler is what the daemon offers the control socket. The server calls it
// from its per-connection goroutines, concurrently, never from the daemon's
// loop: an implementation hands the request to its loop (a channel) or reads
// a snapshot, and honours ctx, which ends when the client's time is up or the
// server stops.
type Handler interface {
	// Status returns a snapshot of the daemon's state.
	Status(ctx context.Context) (Status, error)
	// Reconnect asks for a reconnect of the named uplink now.
	Reconnect(ctx context.Context, uplink string) error
	// Reload re-reads the config file. A bad file leaves the running config
	// in place and is reported as problems (PATH:LINE:COL: message) with a
	// nil error; err is for everything else.
	Reload(ctx context.Context) (problems []string, err error)
	// Event takes a validated poke from a hook script.
	Event(ctx context.Context, ev Event) error
	// Drain takes an uplink out of the default route and its balancing, or
	// puts it back (d.Undrain); the error says why it was refused.
	Drain(ctx context.Context, d Drain) error
}
