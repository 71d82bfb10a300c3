// Package nlrecv reads a netlink subscription without allocating: the
// socket is mdlayher/netlink's (it opens it in a namespace, joins the
// groups, sizes the buffer and holds the read deadline), the read is a
// read(2) on its descriptor into one buffer, split into messages in place.
// See docs/design.md, "Receiving".
package nlrecv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Receiver reads the datagrams of a netlink subscription with read(2)
// into one buffer and splits each into its messages in place.
// mdlayher/netlink's own Receive costs about 25 allocations per datagram (a
// closure, the sender's address, the message slice, a copy of its pooled
// buffer), and a redial brings uplinkd some 30 datagrams, all on the path
// from a kernel event to the pass (BenchmarkReceive in the watcher).
//
// The messages Receive returns point into the buffer: they are valid until
// the next Receive, and whoever reads them must not keep a slice of them.
// One goroutine reads a Receiver.
type Receiver struct {
	*netlink.Conn
	raw  syscall.RawConn
	buf  []byte
	msgs []netlink.Message
	// read is the callback handed to raw.Read, made once: a method value
	// or closure made per call would be an allocation per datagram.
	read  func(fd uintptr) (done bool)
	n     int
	errno error
}

// New reads c's datagrams into a buffer of size bytes, which must hold the
// largest datagram the subscription gets: read(2) cuts a larger one, and a
// message cut short is an error (ErrMalformed).
func New(c *netlink.Conn, size int) (*Receiver, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &Receiver{Conn: c, raw: raw, buf: make([]byte, size)}
	r.read = func(fd uintptr) bool {
		r.n, r.errno = unix.Read(int(fd), r.buf)
		// EAGAIN: nothing queued; the runtime poller waits for the socket.
		return r.errno != unix.EAGAIN
	}
	return r, nil
}

// Receive reads one datagram. An overflow is an error that wraps
// unix.ENOBUFS, as mdlayher/netlink's is.
func (r *Receiver) Receive() ([]netlink.Message, error) {
	if err := r.raw.Read(r.read); err != nil {
		return nil, err // the deadline (ctx done) or a closed socket
	}
	if r.errno != nil {
		return nil, os.NewSyscallError("read", r.errno)
	}
	var err error
	r.msgs, err = Split(r.msgs[:0], r.buf[:r.n])
	return r.msgs, err
}

// ErrMalformed: a datagram that does not split into whole messages.
var ErrMalformed = errors.New("malformed netlink datagram")

// Split appends the messages of datagram b to msgs. Their Data are
// slices of b. A message that claims more than b holds (a datagram cut
// short by a too small buffer, or garbage) is an error: the caller resyncs.
func Split(msgs []netlink.Message, b []byte) ([]netlink.Message, error) {
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return msgs, fmt.Errorf("%w: %d bytes left over", ErrMalformed, len(b))
		}
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			return msgs, fmt.Errorf("%w: message of %d bytes in %d", ErrMalformed, n, len(b))
		}
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{
				Length:   uint32(n),
				Type:     netlink.HeaderType(binary.NativeEndian.Uint16(b[4:6])),
				Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:8])),
				Sequence: binary.NativeEndian.Uint32(b[8:12]),
				PID:      binary.NativeEndian.Uint32(b[12:16]),
			},
			Data: b[unix.NLMSG_HDRLEN:n:n],
		})
		b = b[min(nlmsgAlign(n), len(b)):]
	}
	return msgs, nil
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
