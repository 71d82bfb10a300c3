package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// DefaultCallTimeout bounds a Call whose ctx has no deadline.
const DefaultCallTimeout = 15 * time.Second

// maxResponse bounds what a client reads (a status of many uplinks).
const maxResponse = 4 << 20

// Call sends req to the daemon on the socket at path and returns its
// answer. A request the daemon refused or that failed is a *RemoteError
// (the Response is returned too, with its Problems); any other error means
// the daemon was not reached or did not answer in time. req.V is set.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("control socket: %w", err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	// A cancel before the deadline interrupts the exchange too.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	req.V = Version
	data, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	_, werr := c.Write(append(data, '\n'))
	// Even when the send failed the daemon may have answered (it refuses a
	// peer before reading), and that answer says more than the send error.
	var resp Response
	if err := json.NewDecoder(io.LimitReader(c, maxResponse)).Decode(&resp); err != nil {
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case notAnswer(err):
			// Garbage, or closed without a word: a daemon of ours
			// always answers, even when it refuses.
			return Response{}, &ProtocolError{Err: err}
		case werr != nil:
			return Response{}, fmt.Errorf("control socket: send: %w", werr)
		}
		return Response{}, fmt.Errorf("control socket: no answer: %w", err)
	}
	if resp.V != Version {
		return Response{}, &ProtocolError{Err: fmt.Errorf("protocol version %d, want %d", resp.V, Version)}
	}
	if !resp.OK {
		msg := resp.Error
		if msg == "" {
			msg = "request failed"
		}
		return resp, &RemoteError{Msg: msg, Problems: resp.Problems, Busy: resp.Busy, Unread: resp.Unread}
	}
	return resp, nil
}

// ProtocolError: something answered on the socket, but not with an
// uplinkd response (not JSON, closed without an answer, another protocol
// version): the path is not uplinkd's socket, or the daemon is of another
// version.
type ProtocolError struct{ Err error }

func (e *ProtocolError) Error() string {
	return "control socket: not an uplinkd answer: " + e.Err.Error()
}
func (e *ProtocolError) Unwrap() error { return e.Err }

// notAnswer tells a reply that is not uplinkd's (garbage, or the
// connection closed or reset before any answer: the server answers every
// connection it accepts, refused ones too) from a transport failure.
func notAnswer(err error) bool {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	return errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
