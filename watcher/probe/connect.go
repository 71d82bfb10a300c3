package probe

import (
	"context"
	"net"
	"net/netip"

	"github.com/uplinkd/uplinkd/internal/netnsx"
)

// Connect opens a TCP connection to dst from inside the network namespace
// nsfd (0: the current one), bound to the device iface unless it is "", and
// aborts it at once. nil means the handshake completed. Unlike the tcp probe
// method, which tests an uplink's path and so counts a refusal as an answer,
// a refusal is an error here: it checks that a server listens (a [[service]]
// backend's health). The device binding keeps the check on the LAN even
// when a [[rule]] routes the daemon's own traffic out of an uplink.
func Connect(ctx context.Context, nsfd int, iface string, dst netip.AddrPort) error {
	var c net.Conn
	err := netnsx.Do(nsfd, func() (err error) {
		d := net.Dialer{Control: BindDevice(iface, false)}
		c, err = d.DialContext(ctx, "tcp4", dst.String())
		return err
	})
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// An RST leaves no TIME_WAIT socket per check on either side.
		_ = tc.SetLinger(0)
	}
	return c.Close()
}
