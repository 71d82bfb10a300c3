package kernel

import "errors"

// ErrStale marks an apply that raced with the kernel: a device in the
// snapshot vanished before the change reached it. Not a failure: the event
// that removed the device triggers the next pass. It lives here, with the
// code that meets the race; policy stays free of kernel outcomes.
var ErrStale = errors.New("kernel changed during the pass")
